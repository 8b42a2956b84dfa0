-- The queue keeps its speed beside a held snapshot.
--
-- While any session holds a snapshot (pg_dump, a long report, a client idle
-- in transaction, a replica with hot_standby_feedback), no row version that
-- died after it began can be removed, and no index entry pointing at one can
-- be marked dead. A claim that walks tasks_pending_fair from its head visits
-- the entries of every task finished since, on every claim: with a snapshot
-- held, one Calculator fell to 0.14x of its clean rate after 100,000 tasks,
-- and stayed at 0.7x after the snapshot ended (the emptied index pages are
-- still walked until VACUUM deletes them). So nothing on the queue's hot
-- paths walks the queue from its head any more:
--
--   * Each Calculator starts its claim's index walk just past the last task
--     it claimed (a B-tree range scan that starts there never visits what is
--     before it), moved back to where new or handed-back tasks were placed
--     when it hears of them, and walks from the head only now and then, for
--     what else can become claimable behind it: an expired lease, a claim
--     rolled back (worker/claim_frontier.py).
--   * tasks_queue_head, a sequence (setval is not transactional and leaves no
--     row versions: nothing to bloat), holds a low-water mark: no pending
--     task stands before it in the fair order. A key that comes back after
--     a pause starts at the queue's head, its oldest pending task, as
--     before; that head is now found by a walk that starts at the mark (and
--     moves the mark up to it), not at the index's head, and the lookup of a
--     key's newest pending round stops there, so a key whose tasks have all
--     finished does not walk their entries either.
--   * Every INSERT's tasks_inserted notification says where the earliest of
--     its rows stands in the fair order, so that every Calculator's next
--     claim walks from there.
CREATE SEQUENCE tasks_queue_head AS bigint MINVALUE 0 START WITH 0;

COMMENT ON SEQUENCE tasks_queue_head IS
    'low-water mark of the fair claim order (coalesce(fair_round, id)): no pending task stands before it (queue_head())';

-- The queue's head: the place of its oldest pending task (claimed or not),
-- found by walking tasks_pending_fair from the low-water mark, which then
-- moves up to it; when nothing is pending from the mark on, the next id (a
-- row inserted now without an owner would stand there), which may move the
-- mark back. The walk visits what finished
-- between the mark and the head since the last walk: the mark follows the
-- head as the inserts that need it ask.
CREATE FUNCTION queue_head() RETURNS bigint
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = public, pg_temp SET enable_sort = off AS $$
DECLARE
    low bigint := (SELECT last_value FROM tasks_queue_head);
    head bigint;
BEGIN
    SELECT coalesce(t.fair_round, t.id) INTO head FROM tasks t
    WHERE t.finished_at IS NULL AND (coalesce(t.fair_round, t.id), t.id) >= (low, -9223372036854775808)
    ORDER BY coalesce(t.fair_round, t.id), t.id LIMIT 1;
    IF head IS NULL THEN
        -- Nothing pending from the mark on: the next id, even when the mark
        -- stood past it (the ids restarted, or someone set the sequence):
        -- a lower mark only makes the next walk start earlier.
        head := coalesce((SELECT t.id + 1 FROM tasks t ORDER BY t.id DESC LIMIT 1), 1);
    END IF;
    IF head <> low THEN
        PERFORM setval('tasks_queue_head', head);
    END IF;
    RETURN head;
END;
$$;
REVOKE ALL ON FUNCTION queue_head() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION queue_head() TO calculator_api, calculator_worker;

-- A key's next round: one more than its newest pending round, or, when it
-- has nothing pending, the queue's head. The backward walk of the key's
-- pending tasks stops at the head: nothing pending is before it.
CREATE OR REPLACE FUNCTION next_fair_round(for_owner bigint) RETURNS bigint
LANGUAGE plpgsql VOLATILE SET enable_sort = off AS $$
DECLARE
    head bigint := queue_head();
BEGIN
    RETURN coalesce(
        (SELECT t.fair_round + 1 FROM tasks t
         WHERE t.owner = for_owner AND t.status = 'pending' AND t.owner IS NOT NULL
           AND t.fair_round >= head
         ORDER BY t.fair_round DESC LIMIT 1),
        head);
END;
$$;

-- Every INSERT's notification says where the earliest of its rows stands in
-- the fair order, so that every Calculator's next claim walks from there:
-- a key's tasks placed at the queue's head, behind the Calculators' last
-- claims, and rows without an owner whose transaction committed after one
-- with a higher id had been claimed. A session that notifies after its
-- commits itself (the API: calculator.notify_after_commit, sql/004) gets
-- the place in calculator.first_place instead, the earliest since its last
-- notification, which its NOTIFY sends and resets (api/db.py).
CREATE OR REPLACE FUNCTION notify_tasks_inserted() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    earliest bigint := (SELECT min(coalesce(r.fair_round, r.id)) FROM inserted_rows r);
    before text;
BEGIN
    IF earliest IS NULL THEN
        RETURN NULL;
    END IF;
    IF current_setting('calculator.notify_after_commit', true) = 'on' THEN
        before := current_setting('calculator.first_place', true);
        IF coalesce(before, '') = '' OR earliest < before::bigint THEN
            PERFORM set_config('calculator.first_place', earliest::text, false);
        END IF;
        RETURN NULL;
    END IF;
    PERFORM pg_notify('tasks_inserted', earliest::text);
    RETURN NULL;
END;
$$;

DROP TRIGGER tasks_inserted_notify ON tasks;
CREATE TRIGGER tasks_inserted_notify
    AFTER INSERT ON tasks
    REFERENCING NEW TABLE AS inserted_rows
    FOR EACH STATEMENT
    EXECUTE FUNCTION notify_tasks_inserted();

-- Recovery after a held snapshot ends, and steady state: VACUUM the queue's
-- table after 2 % of it (or 5,000 rows) changed, not 20 %, pausing less
-- between pages.
ALTER TABLE tasks SET (autovacuum_vacuum_scale_factor = 0.02, autovacuum_vacuum_threshold = 5000,
                       autovacuum_vacuum_cost_delay = 1);

-- TRUNCATE empties the queue (and RESTART IDENTITY restarts the ids): the
-- low-water mark goes back to the start with the counters.
CREATE OR REPLACE FUNCTION reset_counts_on_truncate() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
BEGIN
    DELETE FROM task_counts;
    UPDATE task_retention SET purged_through = 0;
    PERFORM setval('tasks_queue_head', 0);
    RETURN NULL;
END;
$$;
