-- GET /api/tasks: a key's own tasks, newest first, of some statuses, a page
-- at a time (api/listing.py, sql/queries/list_tasks_*.sql).
--
-- A page is a union of one index walk per status asked for, each starting
-- below the cursor's id and stopping after a page's worth of rows: however
-- long the history, a page reads at most (page size x statuses) index
-- entries, and a key's few pending tasks are found without walking past its
-- millions of finished ones.
--
-- One key's finished tasks: (owner, status, id). Rows without an owner
-- (psql rows, AUTH=off) are not in it and cost it nothing, and pending rows
-- are not either: an insert does not touch it, and nothing that counts or
-- walks a key's pending tasks can take it, for beside a held snapshot its
-- 'pending' range would keep an entry for every task of the key finished
-- since (sql/011). A key's pending tasks are listed through
-- tasks_pending_by_owner (sql/010), from the queue's head.
CREATE INDEX tasks_listing_by_owner ON tasks (owner, status, id) WHERE owner IS NOT NULL AND status <> 'pending';

-- Every owner's tasks (an admin, AUTH=off): pending rows are found through
-- tasks_pending_by_id (001), error rows through tasks_errors_by_id (008),
-- done rows through the primary key (most rows are done: a walk down the
-- ids passes few others; an index of its own would cost every store one
-- more index entry), cancelled rows through this one, which a row enters
-- only when cancelled (few do).
CREATE INDEX tasks_cancelled_by_id ON tasks (id) WHERE status = 'cancelled';
