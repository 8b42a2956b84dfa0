-- GET /api/stats: the queue, the outcomes and the live Calculators, in one
-- round trip, at a cost that does not grow with the history kept:
--   * the queue by pending_figures() (sql/011): the index of pending rows in
--     fair order walked from the queue's head: beside a held snapshot that
--     index keeps an entry for every task finished since, and a walk from
--     its head visited them all; what finished before the oldest pending
--     task is not visited;
--   * finished tasks kept, by status, and the results of the last minute from
--     the task_counts counters the triggers keep as outcomes are stored
--     (sql/007_retention_counts_cancel.sql): a few hundred rows at most.
WITH queue AS (
    SELECT * FROM pending_figures(NULL)
),
outcomes AS (
    SELECT
        coalesce(sum(n) FILTER (WHERE status = 'done'), 0)       AS done,
        coalesce(sum(n) FILTER (WHERE status = 'error'), 0)      AS errors,
        coalesce(sum(n) FILTER (WHERE status = 'cancelled'), 0)  AS cancelled,
        coalesce(sum(n) FILTER (WHERE status IN ('done', 'error')
                                  AND bucket >= now() - interval '60 seconds'), 0) / 60.0 AS results_per_second
    FROM task_counts
)
SELECT queue.*, outcomes.*,
       (SELECT count(*) FROM calculators WHERE heartbeat_at > now() - interval '15 seconds') AS live_calculators
FROM queue, outcomes
