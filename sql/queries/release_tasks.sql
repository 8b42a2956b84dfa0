-- Hand claimed tasks back to the queue at once (lease expired now), and wake
-- the Calculators: the tasks are claimable by anyone, right away.
-- %(refund)s is 1 when the claim should not count as an attempt (a clean
-- shutdown), 0 when it should (the evaluation process died on it).
WITH released AS (
    UPDATE tasks t
    SET process_at = now(),
        lease_token = NULL,
        attempts = greatest(t.attempts - %(refund)s, 0)
    FROM unnest(%(ids)s::bigint[], %(tokens)s::uuid[]) AS held(id, lease_token)
    WHERE t.id = held.id AND t.lease_token = held.lease_token AND t.status = 'pending'
    RETURNING t.id
),
wake AS (
    SELECT pg_notify('tasks_inserted', '') WHERE EXISTS (SELECT FROM released)
)
SELECT id FROM released, (SELECT count(*) FROM wake) AS notified
