-- Hand claimed tasks back to the queue at once (lease expired now), and wake
-- the Calculators: the tasks are claimable by anyone, right away. The
-- notification says where the earliest of them stands in the fair order,
-- 'place,id', so that every Calculator's next claim walks from there
-- (worker/claim_frontier.py).
-- %(refund)s is 1 when the claim should not count as an attempt (a clean
-- shutdown), 0 when it should (the evaluation process died on it).
--
-- A row another session holds locked is skipped, not waited for: its lease
-- simply runs out instead.
WITH mine AS (
    SELECT t.id
    FROM tasks t
    JOIN unnest(%(ids)s::bigint[], %(tokens)s::uuid[]) AS held(id, lease_token)
      ON t.id = held.id AND t.lease_token = held.lease_token
    WHERE t.status = 'pending'
    FOR UPDATE OF t SKIP LOCKED
),
released AS (
    UPDATE tasks t
    SET process_at = now(),
        lease_token = NULL,
        attempts = greatest(t.attempts - %(refund)s, 0)
    FROM mine
    WHERE t.id = mine.id
    RETURNING t.id, coalesce(t.fair_round, t.id) AS place
),
wake AS (
    SELECT pg_notify('tasks_inserted', place || ',' || id)
    FROM (SELECT place, id FROM released ORDER BY place, id LIMIT 1) AS earliest
)
SELECT id FROM released, (SELECT count(*) FROM wake) AS notified
