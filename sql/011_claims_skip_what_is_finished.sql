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
--   * The earliest place given to new tasks of a key is said in their
--     tasks_inserted notification (the session's calculator.first_place,
--     set by next_fair_round()), so that every Calculator's next claim walks
--     from there.
CREATE SEQUENCE tasks_queue_head AS bigint MINVALUE 0 START WITH 0;

COMMENT ON SEQUENCE tasks_queue_head IS
    'low-water mark of the fair claim order (coalesce(fair_round, id)): no pending task stands before it (queue_head())';

-- The queue's head: the place of its oldest pending task (claimed or not),
-- found by walking tasks_pending_fair from the low-water mark, which then
-- moves up to it; when nothing is pending, the next id (a row inserted now
-- without an owner would stand there). The walk visits what finished
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
        head := greatest(low, coalesce((SELECT t.id + 1 FROM tasks t ORDER BY t.id DESC LIMIT 1), 1));
    END IF;
    IF head > low THEN
        PERFORM setval('tasks_queue_head', head);
    END IF;
    RETURN head;
END;
$$;
REVOKE ALL ON FUNCTION queue_head() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION queue_head() TO calculator_api, calculator_worker;

-- A key's next round: one more than its newest pending round, or, when it
-- has nothing pending, the queue's head. The backward walk of the key's
-- pending tasks stops at the head: nothing pending is before it. The earliest round
-- given out is kept in the session's calculator.first_place for the
-- tasks_inserted notification (the trigger below, or the API's own NOTIFY
-- after its commit), which resets it.
CREATE OR REPLACE FUNCTION next_fair_round(for_owner bigint) RETURNS bigint
LANGUAGE plpgsql VOLATILE SET enable_sort = off AS $$
DECLARE
    head bigint := queue_head();
    round bigint;
    earliest text := current_setting('calculator.first_place', true);
BEGIN
    round := coalesce(
        (SELECT t.fair_round + 1 FROM tasks t
         WHERE t.owner = for_owner AND t.status = 'pending' AND t.owner IS NOT NULL
           AND t.fair_round >= head
         ORDER BY t.fair_round DESC LIMIT 1),
        head);
    IF coalesce(earliest, '') = '' OR round < earliest::bigint THEN
        PERFORM set_config('calculator.first_place', round::text, false);
    END IF;
    RETURN round;
END;
$$;

-- The notification of psql's inserts says where their earliest round is
-- ('' for rows without an owner: they are placed by id, past every claim).
CREATE OR REPLACE FUNCTION notify_tasks_inserted() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF current_setting('calculator.notify_after_commit', true) = 'on' THEN
        RETURN NULL;
    END IF;
    PERFORM pg_notify('tasks_inserted', coalesce(current_setting('calculator.first_place', true), '')),
            set_config('calculator.first_place', '', false);
    RETURN NULL;
END;
$$;

-- Recovery after a held snapshot ends, and steady state: VACUUM the queue's
-- table after 2 % of it (or 5,000 rows) changed, not 20 %, pausing less
-- between pages.
ALTER TABLE tasks SET (autovacuum_vacuum_scale_factor = 0.02, autovacuum_vacuum_threshold = 5000,
                       autovacuum_vacuum_cost_delay = 1);
