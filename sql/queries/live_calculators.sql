-- The live Calculators (heartbeat less than 15 s old, as in queue_stats.sql)
-- with their settings and their figures, for the dashboard and GET /metrics.
-- The table holds one row per Calculator: nothing to scan.
SELECT hostname,
       pid,
       extract(epoch FROM now() - heartbeat_at)::float8 AS heartbeat_age_seconds,
       extract(epoch FROM now() - started_at)::float8   AS uptime_seconds,
       settings,
       metrics
FROM calculators
WHERE heartbeat_at > now() - interval '15 seconds'
ORDER BY hostname, pid
