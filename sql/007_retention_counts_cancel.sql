-- Runs for months: bounded history, costs that do not grow with it, and
-- cancellation.
--
--   * status 'cancelled': a pending task cancelled by cancel_tasks();
--   * task_counts: outcome counters kept as outcomes are stored, so that
--     GET /api/stats never scans the history (totals since the database was
--     created or last truncated: deleting old tasks does not lower them, so
--     they are proper counters for /metrics);
--   * task_retention and tasks_maintenance(): finished tasks older than
--     RESULT_RETENTION deleted in small batches by one Calculator at a time,
--     and how far that went (which ids answer 410 instead of 404);
--   * task_outcomes(): the API's read rule (expired / unknown) for psql.

-- A cancelled task is finished: no result, no error, finished_at = when.
ALTER TABLE tasks DROP CONSTRAINT tasks_status_is_known;
ALTER TABLE tasks DROP CONSTRAINT tasks_outcome_matches_status;
ALTER TABLE tasks
    ADD CONSTRAINT tasks_status_is_known CHECK (status IN ('pending', 'done', 'error', 'cancelled')),
    ADD CONSTRAINT tasks_outcome_matches_status CHECK (
        CASE status
            WHEN 'pending' THEN result IS NULL AND error IS NULL AND finished_at IS NULL
            WHEN 'done' THEN result IS NOT NULL AND error IS NULL AND finished_at IS NOT NULL
            WHEN 'error' THEN result IS NULL AND error IS NOT NULL AND finished_at IS NOT NULL
            WHEN 'cancelled' THEN result IS NULL AND error IS NULL AND finished_at IS NOT NULL
        END);

------------------------------------------------------------------------------
-- Outcome counters.
--
-- One row per (bucket, status, shard): bucket is the second the outcomes
-- were stored in ('-infinity' holds everything older than two minutes,
-- folded in by tasks_maintenance), shard is the writing session's pid mod 16,
-- so concurrent Calculators do not queue behind one hot row. A reader sums at
-- most a few hundred rows: outcomes stored by status, and the results of the
-- last minute for the rate.
CREATE TABLE task_counts (
    bucket  timestamptz NOT NULL,
    status  text        NOT NULL,
    shard   integer     NOT NULL,
    n       bigint      NOT NULL,
    PRIMARY KEY (bucket, status, shard)
);

-- Statement triggers: one aggregate per statement, not per row. Claims and
-- lease extensions change no status and add nothing.
CREATE FUNCTION count_status_changes() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
BEGIN
    INSERT INTO task_counts AS c (bucket, status, shard, n)
    SELECT date_trunc('second', now()), changed.status, pg_backend_pid() % 16, sum(changed.delta)
    FROM (SELECT status, 1 AS delta FROM new_rows WHERE status <> 'pending'
          UNION ALL
          SELECT status, -1 FROM old_rows WHERE status <> 'pending') AS changed
    GROUP BY changed.status
    HAVING sum(changed.delta) <> 0
    ORDER BY changed.status  -- the same lock order in every session
    ON CONFLICT (bucket, status, shard) DO UPDATE SET n = c.n + excluded.n;
    RETURN NULL;
END;
$$;

CREATE FUNCTION reset_counts_on_truncate() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
BEGIN
    DELETE FROM task_counts;
    UPDATE task_retention SET purged_through = 0;
    RETURN NULL;
END;
$$;

CREATE TRIGGER tasks_count_updates AFTER UPDATE ON tasks
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION count_status_changes();
CREATE TRIGGER tasks_reset_counts AFTER TRUNCATE ON tasks
    FOR EACH STATEMENT EXECUTE FUNCTION reset_counts_on_truncate();

-- Rows inserted already finished (nothing in this service does that; a bulk
-- load of history might) are not counted by the triggers: a per-row insert
-- trigger would tax every submission. recount_tasks() recounts from the rows
-- in the table (forgetting those deleted before).
CREATE FUNCTION recount_tasks() RETURNS void
LANGUAGE sql AS $$
    LOCK TABLE tasks IN SHARE MODE;
    DELETE FROM task_counts;
    INSERT INTO task_counts (bucket, status, shard, n)
    SELECT '-infinity', status, 0, count(*) FROM tasks WHERE status <> 'pending' GROUP BY status;
$$;

------------------------------------------------------------------------------
-- Retention.
--
-- One row: the highest id deleted for its age (an id at or below it that is
-- not in tasks has expired: 410, not 404) and the retention it was deleted
-- under (for the message "results are kept for 7 days").
CREATE TABLE task_retention (
    only_row        boolean     PRIMARY KEY DEFAULT true CHECK (only_row),
    purged_through  bigint      NOT NULL DEFAULT 0,
    kept_for        interval,
    purged_at       timestamptz
);
INSERT INTO task_retention DEFAULT VALUES;

SELECT recount_tasks();

-- The Calculators' maintenance, one session at a time (the others get -1 at
-- once; nobody waits): delete up to batch_size finished tasks that finished
-- more than keep ago, oldest first (NULL keep: delete nothing), and fold
-- counter buckets older than two minutes into the '-infinity' ones.
-- Returns the number of tasks deleted. Pending tasks are never deleted,
-- whatever their age. SECURITY DEFINER: a Calculator may run this, but
-- cannot DELETE from tasks itself.
CREATE FUNCTION tasks_maintenance(keep interval, batch_size integer) RETURNS integer
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
        RETURNING status, n
    )
    INSERT INTO task_counts AS c (bucket, status, shard, n)
    SELECT '-infinity', status, 0, sum(n) FROM folded GROUP BY status ORDER BY status
    ON CONFLICT (bucket, status, shard) DO UPDATE SET n = c.n + excluded.n;
    RETURN deleted;
END;
$$;

------------------------------------------------------------------------------
-- Reading outcomes by id, with the same rule as the API: an id not in tasks
-- is 'expired' if retention deleted it, 'unknown' if it was never issued.
CREATE FUNCTION task_outcomes(ids bigint[])
RETURNS TABLE (id bigint, status text, result jsonb, error text)
LANGUAGE sql STABLE AS $$
    SELECT wanted.id,
           coalesce(t.status, CASE WHEN wanted.id <= r.purged_through THEN 'expired' ELSE 'unknown' END),
           t.result, t.error
    FROM unnest(ids) WITH ORDINALITY AS wanted(id, position)
    CROSS JOIN task_retention r
    LEFT JOIN tasks t ON t.id = wanted.id
    ORDER BY wanted.position
$$;

------------------------------------------------------------------------------
-- Cancellation: pending tasks become 'cancelled' (finished, no result). The
-- fence already holds: a Calculator stores an outcome, extends a lease or
-- hands a task back only where the row is still pending under its token.
-- Calculators LISTEN on tasks_cancelled and kill an evaluation process
-- running a cancelled task; API processes waiting on a result
-- (?wait=) are woken on results_stored.
--
-- Returns one row per id asked for: its status after the call ('cancelled',
-- or 'done'/'error' when it had finished, 'expired', 'unknown') and whether
-- this call cancelled it.
CREATE FUNCTION cancel_tasks(ids bigint[])
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
    SELECT o.id, o.status, o.id = ANY(cancelled)
    FROM task_outcomes(ids) AS o;
END;
$$;

------------------------------------------------------------------------------
-- Least privilege (see sql/002_roles.sql).
REVOKE ALL ON FUNCTION tasks_maintenance(interval, integer), cancel_tasks(bigint[]),
                       recount_tasks() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION tasks_maintenance(interval, integer) TO calculator_worker;
GRANT EXECUTE ON FUNCTION cancel_tasks(bigint[]) TO calculator_api;
GRANT SELECT ON task_counts, task_retention TO calculator_api;
