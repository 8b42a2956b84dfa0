-- GET /api/stats for a key that is not an admin: the same figures as
-- queue_stats.sql, of its own tasks only: its queue through the index of
-- pending tasks by owner, its outcomes from the per-owner counters
-- (sql/010). The live Calculators are everyone's: they serve every key.
-- The key's pending tasks are walked from the queue's head by
-- pending_figures() (sql/011), not from the key's first task ever: beside a
-- held snapshot the index keeps an entry for every task of the key finished
-- since.
WITH queue AS (
    SELECT * FROM pending_figures(%(owner)s)
),
outcomes AS (
    SELECT
        coalesce(sum(n) FILTER (WHERE status = 'done'), 0)       AS done,
        coalesce(sum(n) FILTER (WHERE status = 'error'), 0)      AS errors,
        coalesce(sum(n) FILTER (WHERE status = 'cancelled'), 0)  AS cancelled,
        coalesce(sum(n) FILTER (WHERE status IN ('done', 'error')
                                  AND bucket >= now() - interval '60 seconds'), 0) / 60.0 AS results_per_second
    FROM task_counts
    WHERE owner = %(owner)s
)
SELECT queue.*, outcomes.*,
       (SELECT count(*) FROM calculators WHERE heartbeat_at > now() - interval '15 seconds') AS live_calculators
FROM queue, outcomes
