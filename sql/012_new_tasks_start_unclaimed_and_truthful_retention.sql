-- Two things psql could make the service say that were not true.
--
-- 1. A task inserted with psql and `attempts = 1000` was given up at its first
--    claim with "gave up after 1000 attempts: each claim ended without an
--    outcome" although nothing had been evaluated. attempts counts the claims
--    of this task, so a new pending task starts at 0: any other value is
--    refused at INSERT (a finished row inserted as history may carry its count).
CREATE FUNCTION refuse_inserting_claimed_tasks() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'a new task starts with attempts = 0, not %', NEW.attempts
        USING ERRCODE = 'check_violation',
              HINT = 'attempts counts the claims of this task by Calculators: leave it out of the INSERT';
END;
$$;

CREATE TRIGGER tasks_start_unclaimed BEFORE INSERT ON tasks
    FOR EACH ROW
    WHEN (NEW.status = 'pending' AND NEW.attempts <> 0)
    EXECUTE FUNCTION refuse_inserting_claimed_tasks();

-- 2. The 410 message said "results are kept for 7 days" for rows deleted
--    under another retention (tasks_maintenance(interval '1 second', ...) from
--    psql, then the Calculator's next call with 7 days rewrote kept_for
--    although it deleted nothing). kept_for is now the retention that every
--    deletion so far was made under, or NULL once two differed (the message
--    then gives no figure), and only a call that deletes changes it.
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
            kept_for = CASE WHEN purged_through = 0 OR kept_for = keep THEN keep END,
            purged_at = now()
        WHERE deleted > 0;
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

-- A database whose kept_for was rewritten by a call that deleted nothing
-- cannot tell which retention its deletions were made under: no figure.
UPDATE task_retention SET kept_for = NULL WHERE purged_through > 0;
