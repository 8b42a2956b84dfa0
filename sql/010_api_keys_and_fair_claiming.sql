-- Who may do what, and a fair share for everyone: API keys, task owners,
-- per-key limits and fair claiming.
--
--   * api_keys: the API's keys, hashed (SHA-256 of the secret part; the key
--     itself is shown once by `python -m api.keys create` and stored nowhere);
--   * tasks.owner: the key that submitted a task (NULL: nobody, e.g. a row
--     inserted with psql; psql users may set it to an api_keys id);
--   * tasks.fair_round: where the task stands in the fair order the
--     Calculators claim in (next_fair_round below);
--   * submission_buckets and admit_submission(): the per-key limits
--     (unfinished tasks, token-bucket rates), kept in PostgreSQL so that any
--     number of API processes share them;
--   * idempotency keys and outcome counters per owner; cancel_tasks() that
--     can be limited to one owner's tasks.

------------------------------------------------------------------------------
-- Keys. A key reads "calc_<id>_<secret>": the id finds the row, the secret's
-- SHA-256 is compared in constant time by the API (api/auth.py). Keys are
-- revoked, never deleted, so an owner id always names a key.
CREATE TABLE api_keys (
    id             bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name           text        NOT NULL,
    secret_sha256  bytea       NOT NULL,
    is_admin       boolean     NOT NULL DEFAULT false,
    created_at     timestamptz NOT NULL DEFAULT now(),
    revoked_at     timestamptz,
    CONSTRAINT api_keys_name_shape CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$'),
    CONSTRAINT api_keys_secret_is_sha256 CHECK (length(secret_sha256) = 32)
);
-- One live key per name, whatever its case; a revoked name may be given to a
-- new key (a new id: it does not see the old key's tasks).
CREATE UNIQUE INDEX api_keys_live_name ON api_keys (lower(name)) WHERE revoked_at IS NULL;

-- Keys are revoked, never deleted: an id names one key forever, so a task's
-- owner can never come to mean another key.
CREATE FUNCTION refuse_deleting_api_keys() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'API key % (%) cannot be deleted', OLD.id, OLD.name
        USING ERRCODE = 'restrict_violation',
              HINT = 'revoke it instead: python -m api.keys revoke NAME';
END;
$$;

CREATE TRIGGER api_keys_are_never_deleted BEFORE DELETE ON api_keys
    FOR EACH ROW EXECUTE FUNCTION refuse_deleting_api_keys();

-- Every change of api_keys is announced: API processes keep the rows of
-- the keys they have seen while they hear this, and empty that cache on it
-- (api/auth.py), so a revoked key stops working within milliseconds.
CREATE FUNCTION notify_api_keys_changed() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('api_keys_changed', '');
    RETURN NULL;
END;
$$;

CREATE TRIGGER api_keys_changed_notify
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON api_keys
    FOR EACH STATEMENT
    EXECUTE FUNCTION notify_api_keys_changed();

COMMENT ON TABLE api_keys IS
    'API keys: create and revoke with python -m api.keys; tasks.owner is an id from here.';

------------------------------------------------------------------------------
-- Owners and the fair order.
--
-- The claim takes pending tasks in order of coalesce(fair_round, id), then
-- id. A task submitted with a key gets, as its round, one more than the
-- key's newest pending task, or, when the key has nothing pending, the round
-- at the head of the queue: a key's k-th waiting task stands at the k-th
-- place among everyone's, so keys take turns however much each one queued,
-- and a key that comes back after a pause starts at the head rather than
-- behind everybody's backlog (start-time fair queueing, one task a turn).
-- Rows without an owner keep their id as their place: served in arrival
-- order, as before this migration; with AUTH=off every row is such a row.
ALTER TABLE tasks ADD COLUMN owner bigint, ADD COLUMN fair_round bigint,
    ADD CONSTRAINT tasks_owner_is_a_key_id CHECK (owner > 0);

COMMENT ON COLUMN tasks.owner IS
    'api_keys.id of the key that submitted the task; NULL: nobody (psql rows, AUTH=off)';
COMMENT ON COLUMN tasks.fair_round IS
    'place in the fair claim order, set at insert (NULL: the id, arrival order)';

-- The claim's index: the queue in fair order. Its predicate says "pending"
-- as finished_at IS NULL (the same rows: tasks_outcome_matches_status), so
-- that only statements that say so too (the claim, next_fair_round) can use
-- it. The statements that name their rows by id and say status = 'pending'
-- (store, extend, release) keep searching the index of pending rows by id
-- (001) for just those ids: offered this one, the planner, believing in one
-- pending row after an ANALYZE of a long history, scanned the whole queue on
-- every store (tests/test_retention.py, sql/queries/store_results.sql).
CREATE INDEX tasks_pending_fair ON tasks ((coalesce(fair_round, id)), id) WHERE finished_at IS NULL;
-- A key's pending tasks: its newest round, and how many it has (the
-- MAX_PENDING_PER_KEY limit, a key's own /api/stats).
CREATE INDEX tasks_pending_by_owner ON tasks (owner, fair_round)
    WHERE status = 'pending' AND owner IS NOT NULL;

-- VOLATILE: called by the row trigger below, it sees the rows inserted
-- earlier by the same statement, so a multi-row INSERT gets consecutive
-- rounds. PL/pgSQL, not SQL: its plans are kept for the session (as an SQL
-- function called from PL/pgSQL it was planned on every call: 20x slower).
-- Each lookup is one index probe, written ORDER BY ... LIMIT 1 with sorting
-- off, so that no plan can read more: a plan kept from when the table was
-- small (statistics of a few rows) read every pending task of the key with
-- max(), 1.3 ms at 5,000 (an aggregate over the whole index looks as cheap
-- as a probe to a planner that believes in one row).
CREATE FUNCTION next_fair_round(for_owner bigint) RETURNS bigint
LANGUAGE plpgsql VOLATILE SET enable_sort = off AS $$
BEGIN
    RETURN coalesce(
        (SELECT t.fair_round + 1 FROM tasks t
         WHERE t.owner = for_owner AND t.status = 'pending' AND t.owner IS NOT NULL
         ORDER BY t.fair_round DESC LIMIT 1),
        (SELECT coalesce(t.fair_round, t.id) FROM tasks t WHERE t.finished_at IS NULL
         ORDER BY coalesce(t.fair_round, t.id), t.id LIMIT 1),
        (SELECT t.id + 1 FROM tasks t ORDER BY t.id DESC LIMIT 1),
        1);
END;
$$;

-- A row inserted with an owner but no round (psql) gets its round here, and
-- its owner must be a key that exists (no foreign key: its check would lock
-- the key's row for every task inserted). The API computes the rounds of its
-- rows in its INSERT (one call a statement) for the key it authenticated;
-- rows without an owner do not fire this trigger at all. A psql user who
-- sets both owner and fair_round is trusted with both.
CREATE FUNCTION assign_fair_round() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (SELECT FROM api_keys WHERE id = NEW.owner) THEN
        RAISE EXCEPTION 'owner % is not an API key', NEW.owner
            USING ERRCODE = 'foreign_key_violation',
                  HINT = 'owner is an api_keys id: SELECT id, name FROM api_keys, or leave it NULL (nobody)';
    END IF;
    IF TG_OP = 'INSERT' THEN
        NEW.fair_round := next_fair_round(NEW.owner);
    END IF;
    RETURN NEW;
END;
$$;

CREATE TRIGGER tasks_fair_round BEFORE INSERT ON tasks
    FOR EACH ROW
    WHEN (NEW.owner IS NOT NULL AND NEW.fair_round IS NULL)
    EXECUTE FUNCTION assign_fair_round();

-- Giving a pending task to a key with psql: that key must exist too.
CREATE TRIGGER tasks_owner_changed BEFORE UPDATE OF owner ON tasks
    FOR EACH ROW
    WHEN (NEW.owner IS NOT NULL AND NEW.owner IS DISTINCT FROM OLD.owner)
    EXECUTE FUNCTION assign_fair_round();

-- A finished row's owner is final too (sql/009 lists the rest).
CREATE OR REPLACE FUNCTION refuse_changing_finished_tasks() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.status <> 'pending'
       AND (NEW.status IS DISTINCT FROM OLD.status
            OR NEW.result IS DISTINCT FROM OLD.result
            OR NEW.error IS DISTINCT FROM OLD.error
            OR NEW.expression IS DISTINCT FROM OLD.expression
            OR NEW.variables IS DISTINCT FROM OLD.variables
            OR NEW.created_at IS DISTINCT FROM OLD.created_at
            OR NEW.finished_at IS DISTINCT FROM OLD.finished_at
            OR NEW.owner IS DISTINCT FROM OLD.owner
            OR NEW.id IS DISTINCT FROM OLD.id) THEN
        RAISE EXCEPTION 'task % is finished (%): its outcome cannot be changed', OLD.id, OLD.status
            USING ERRCODE = 'restrict_violation',
                  HINT = 'a finished task keeps its expression and its one outcome; insert a new task instead';
    END IF;
    RETURN NEW;
END;
$$;

DROP TRIGGER tasks_finished_are_final ON tasks;
CREATE TRIGGER tasks_finished_are_final
    BEFORE UPDATE OF status, result, error, expression, variables, created_at, finished_at, owner, id ON tasks
    FOR EACH ROW
    WHEN (OLD.status <> 'pending')
    EXECUTE FUNCTION refuse_changing_finished_tasks();

------------------------------------------------------------------------------
-- Limits per key, shared by every API process.
--
-- One row per key (0: requests without a key, AUTH=off): two token buckets,
-- requests and items (a bulk submission of n items takes one request and n
-- items), refilled continuously at their rates up to their bursts.
CREATE TABLE submission_buckets (
    owner           bigint           PRIMARY KEY,
    request_tokens  double precision NOT NULL,
    item_tokens     double precision NOT NULL,
    refilled_at     timestamptz      NOT NULL
);

-- Admit a submission of `items` tasks by `for_owner` (NULL: no key). One
-- row: refused NULL and the fair round of the first item (the others follow
-- it by one each; NULL for no owner), or refused = 'rate' with detail = the
-- seconds until the request would pass, or refused = 'pending' with detail =
-- the key's unfinished tasks (counted up to max_pending). A rate or a limit
-- of 0 is no limit.
--
-- The INSERT it admits reads this row and inserts nothing when refused
-- (sql/queries/insert_tasks_admitted.sql): a refusal is an answer, not an
-- error, so a client hammering past its limit fills no server log. The
-- bucket row (or, without rate limits, an advisory lock of the key) stays
-- locked until that INSERT commits: two submissions of one key take turns
-- from here to their commit, so the unfinished-task limit is exact, and the
-- clock is read after the lock is granted (and never before the bucket's
-- last refill), so a submission that waited for it refills nothing twice.
-- Submissions of different keys do not wait for each other.
CREATE FUNCTION admit_submission(for_owner bigint, items integer, max_pending integer,
                                 request_rate float8, request_burst float8,
                                 item_rate float8, item_burst float8)
RETURNS TABLE (first_round bigint, refused text, detail float8)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = public, pg_temp SET enable_sort = off AS $$
DECLARE
    bucket_owner bigint := coalesce(for_owner, 0);
    bucket submission_buckets;
    now_ts timestamptz;
    elapsed float8;
    requests_left float8;
    items_left float8;
    wait float8 := 0;
    pending bigint;
BEGIN
    IF request_rate > 0 OR item_rate > 0 THEN
        SELECT * INTO bucket FROM submission_buckets b WHERE b.owner = bucket_owner FOR UPDATE;
        IF NOT FOUND THEN
            INSERT INTO submission_buckets VALUES (bucket_owner, request_burst, item_burst, clock_timestamp())
            ON CONFLICT (owner) DO NOTHING;
            SELECT * INTO bucket FROM submission_buckets b WHERE b.owner = bucket_owner FOR UPDATE;
        END IF;
        now_ts := greatest(clock_timestamp(), bucket.refilled_at);  -- after the lock: see above
        elapsed := extract(epoch FROM now_ts - bucket.refilled_at);
        requests_left := least(request_burst, bucket.request_tokens + elapsed * request_rate);
        items_left := least(item_burst, bucket.item_tokens + elapsed * item_rate);
        IF request_rate > 0 AND requests_left < 1 THEN
            wait := greatest(wait, (1 - requests_left) / request_rate);
        END IF;
        IF item_rate > 0 AND items_left < items THEN
            wait := greatest(wait, (items - items_left) / item_rate);
        END IF;
        IF wait > 0 THEN
            RETURN QUERY SELECT NULL::bigint, 'rate'::text, wait;
            RETURN;
        END IF;
        UPDATE submission_buckets b
        SET request_tokens = requests_left - CASE WHEN request_rate > 0 THEN 1 ELSE 0 END,
            item_tokens = items_left - CASE WHEN item_rate > 0 THEN items ELSE 0 END,
            refilled_at = now_ts
        WHERE b.owner = bucket_owner;
    ELSIF max_pending > 0 AND for_owner IS NOT NULL THEN
        -- No bucket to lock: the key's turn is taken on an advisory lock.
        PERFORM pg_advisory_xact_lock(7301955, (for_owner % 2147483647)::integer);
    END IF;
    IF max_pending > 0 THEN
        IF for_owner IS NULL THEN
            SELECT count(*) INTO pending FROM (
                SELECT FROM tasks t WHERE t.status = 'pending' AND t.owner IS NULL LIMIT max_pending) AS p;
        ELSE
            -- A key's pending rounds are distinct (its submissions take
            -- turns here, each one after its newest round), so their span
            -- bounds their number: two index probes, where counting would
            -- read up to max_pending entries on every submission. Counted
            -- only when the span says the limit may be near.
            -- (Two probes written as next_fair_round's, for the same reason.)
            pending := (SELECT t.fair_round FROM tasks t
                        WHERE t.owner = for_owner AND t.status = 'pending' AND t.owner IS NOT NULL
                        ORDER BY t.fair_round DESC LIMIT 1)
                     - (SELECT t.fair_round FROM tasks t
                        WHERE t.owner = for_owner AND t.status = 'pending' AND t.owner IS NOT NULL
                        ORDER BY t.fair_round LIMIT 1) + 1;
            IF coalesce(pending, 0) + items > max_pending THEN
                SELECT count(*) INTO pending FROM (
                    SELECT FROM tasks t WHERE t.owner = for_owner AND t.status = 'pending' AND t.owner IS NOT NULL
                    LIMIT max_pending) AS p;
            END IF;
        END IF;
        IF pending + items > max_pending THEN
            RETURN QUERY SELECT NULL::bigint, 'pending'::text, pending::float8;
            RETURN;
        END IF;
    END IF;
    RETURN QUERY SELECT CASE WHEN for_owner IS NULL THEN NULL ELSE next_fair_round(for_owner) END,
                        NULL::text, NULL::float8;
END;
$$;

------------------------------------------------------------------------------
-- Idempotency keys belong to the key that used them: two clients that pick
-- the same Idempotency-Key do not see each other's requests (0: no key).
ALTER TABLE idempotency_keys ADD COLUMN owner bigint NOT NULL DEFAULT 0;
ALTER TABLE idempotency_keys DROP CONSTRAINT idempotency_keys_pkey;
ALTER TABLE idempotency_keys ADD PRIMARY KEY (owner, key);

------------------------------------------------------------------------------
-- Outcome counters per owner (0: nobody), so that a key's /api/stats shows
-- its own figures without scanning its history.
ALTER TABLE task_counts ADD COLUMN owner bigint NOT NULL DEFAULT 0;
ALTER TABLE task_counts DROP CONSTRAINT task_counts_pkey;
ALTER TABLE task_counts ADD PRIMARY KEY (bucket, status, shard, owner);

CREATE OR REPLACE FUNCTION count_status_changes() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
BEGIN
    INSERT INTO task_counts AS c (bucket, status, shard, owner, n)
    SELECT date_trunc('second', now()), changed.status, pg_backend_pid() % 16, changed.owner,
           sum(changed.delta)
    FROM (SELECT status, coalesce(owner, 0) AS owner, 1 AS delta FROM new_rows WHERE status <> 'pending'
          UNION ALL
          SELECT status, coalesce(owner, 0), -1 FROM old_rows WHERE status <> 'pending') AS changed
    GROUP BY changed.status, changed.owner
    HAVING sum(changed.delta) <> 0
    ORDER BY changed.status, changed.owner  -- the same lock order in every session
    ON CONFLICT (bucket, status, shard, owner) DO UPDATE SET n = c.n + excluded.n;
    RETURN NULL;
END;
$$;

CREATE OR REPLACE FUNCTION recount_tasks() RETURNS void
LANGUAGE sql AS $$
    LOCK TABLE tasks IN SHARE MODE;
    DELETE FROM task_counts;
    INSERT INTO task_counts (bucket, status, shard, owner, n)
    SELECT '-infinity', status, 0, coalesce(owner, 0), count(*) FROM tasks
    WHERE status <> 'pending' GROUP BY status, coalesce(owner, 0);
$$;

CREATE OR REPLACE FUNCTION tasks_maintenance(keep interval, batch_size integer) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    deleted integer := 0;
    newest_id bigint;
BEGIN
    IF keep <= interval '0' THEN
        RAISE EXCEPTION 'keep must be a positive interval (NULL keeps everything), not %', keep;
    END IF;
    IF NOT pg_try_advisory_xact_lock(7301955433011) THEN
        RETURN -1;
    END IF;
    IF keep IS NOT NULL THEN
        WITH gone AS (
            DELETE FROM tasks
            WHERE id = ANY(ARRAY(
                SELECT id FROM tasks
                WHERE finished_at < now() - keep AND status <> 'pending'
                ORDER BY finished_at
                LIMIT batch_size
                FOR UPDATE SKIP LOCKED))
              AND status <> 'pending'
            RETURNING id
        )
        SELECT count(*), max(id) INTO deleted, newest_id FROM gone;
        UPDATE task_retention
        SET purged_through = greatest(purged_through, coalesce(newest_id, 0)),
            kept_for = keep,
            purged_at = CASE WHEN deleted > 0 THEN now() ELSE purged_at END
        WHERE deleted > 0 OR kept_for IS DISTINCT FROM keep;
    END IF;
    WITH folded AS (
        DELETE FROM task_counts
        WHERE bucket < now() - interval '2 minutes' AND NOT (bucket = '-infinity' AND shard = 0)
        RETURNING status, owner, n
    )
    INSERT INTO task_counts AS c (bucket, status, shard, owner, n)
    SELECT '-infinity', status, 0, owner, sum(n) FROM folded
    GROUP BY status, owner ORDER BY status, owner
    ON CONFLICT (bucket, status, shard, owner) DO UPDATE SET n = c.n + excluded.n;
    RETURN deleted;
END;
$$;

------------------------------------------------------------------------------
-- Cancelling, optionally only one owner's tasks: with owned_by set, another
-- owner's task is reported exactly like an id that does not exist
-- ('unknown', or 'expired' at or below the retention mark) and is not touched.
-- owned_by NULL: any task (psql, admin keys, AUTH=off).
DROP FUNCTION cancel_tasks(bigint[]);
CREATE FUNCTION cancel_tasks(ids bigint[], owned_by bigint DEFAULT NULL)
RETURNS TABLE (id bigint, status text, cancelled_now boolean)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    cancelled bigint[];
    listed text;
BEGIN
    WITH changed AS (
        UPDATE tasks t
        SET status = 'cancelled', finished_at = clock_timestamp()
        WHERE t.id = ANY(ids) AND t.status = 'pending'
          AND (owned_by IS NULL OR t.owner = owned_by)
        RETURNING t.id
    )
    SELECT coalesce(array_agg(changed.id ORDER BY changed.id), '{}') INTO cancelled FROM changed;
    IF cardinality(cancelled) > 0 THEN
        listed := array_to_string(cancelled, ',');
        IF length(listed) > 7900 THEN
            listed := '*';
        END IF;
        PERFORM pg_notify('tasks_cancelled', listed);
        PERFORM pg_notify('results_stored', listed);
    END IF;
    -- A new statement, a new snapshot: a task finished by a Calculator while
    -- we waited for its row lock is reported with its outcome.
    RETURN QUERY
    SELECT o.id,
           CASE WHEN owned_by IS NULL OR t.owner = owned_by OR t.id IS NULL THEN o.status
                -- another owner's task: what an id not in tasks would say
                WHEN o.id <= r.purged_through THEN 'expired'
                ELSE 'unknown' END,
           o.id = ANY(cancelled)
    FROM task_outcomes(ids) AS o
    CROSS JOIN task_retention r
    LEFT JOIN tasks t ON t.id = o.id;
END;
$$;

------------------------------------------------------------------------------
-- Least privilege. The API reads keys (it never creates or revokes them: the
-- CLI does, as the database's owner), sets the owner and round of what it
-- inserts, and admits submissions through admit_submission() only.
REVOKE ALL ON FUNCTION admit_submission(bigint, integer, integer, float8, float8, float8, float8),
                       cancel_tasks(bigint[], bigint) FROM PUBLIC;
GRANT SELECT (id, name, secret_sha256, is_admin, revoked_at) ON api_keys TO calculator_api;
GRANT INSERT (owner, fair_round) ON tasks TO calculator_api;
GRANT EXECUTE ON FUNCTION admit_submission(bigint, integer, integer, float8, float8, float8, float8),
                          cancel_tasks(bigint[], bigint) TO calculator_api;
