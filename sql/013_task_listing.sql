-- GET /api/tasks: a key's own tasks, newest first, of some statuses, a page
-- at a time (api/listing.py, sql/queries/list_tasks_*.sql).
--
-- A page is a union of one index walk per status asked for, each starting
-- below the cursor's id and stopping after a page's worth of rows: however
-- long the history, a page reads at most (page size x statuses) index
-- entries, and a key's few pending tasks are found without walking past its
-- millions of finished ones.
--
-- One key's tasks: (owner, status, id). Rows without an owner (psql rows,
-- AUTH=off) are not in it and cost it nothing.
CREATE INDEX tasks_listing_by_owner ON tasks (owner, status, id) WHERE owner IS NOT NULL;

-- Every owner's tasks (an admin, AUTH=off): pending rows are found through
-- tasks_pending_by_id (001), error rows through tasks_errors_by_id (008);
-- these two serve the other finished statuses. A row enters them only when
-- it is finished, so an insert does not touch them.
CREATE INDEX tasks_done_by_id ON tasks (id) WHERE status = 'done';
CREATE INDEX tasks_cancelled_by_id ON tasks (id) WHERE status = 'cancelled';
