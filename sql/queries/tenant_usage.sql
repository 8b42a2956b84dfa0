-- The page's fairness panel and GET /metrics: each tenant's figures, summed
-- over the live Calculators' tenant_usage (sql/017_fair_share_of_time.sql:
-- {"<api_keys id>" or "none": [CPU seconds since the Calculator started,
-- CPU seconds over the last minute, tasks running now]}), with its name and
-- weight; with %(with_pending)s, its pending tasks too (through the partial
-- index of pending tasks by owner), and the tenants with pending tasks but
-- no usage yet. Tenant 'none': the rows without an owner (weight 1).
-- A live Calculator: heartbeat less than 15 s old (live_calculators.sql).
WITH usage AS (
    SELECT u.key AS tenant,
           sum((u.value ->> 0)::float8) AS cpu_seconds,
           sum((u.value ->> 1)::float8) AS cpu_seconds_last_minute,
           sum((u.value ->> 2)::float8)::bigint AS running
    FROM calculators c CROSS JOIN LATERAL jsonb_each(
        CASE WHEN jsonb_typeof(c.tenant_usage) = 'object' THEN c.tenant_usage ELSE '{}' END) u
    WHERE c.heartbeat_at > now() - interval '15 seconds'
      AND jsonb_typeof(u.value) = 'array'
      AND (u.key = 'none' OR u.key ~ '^[1-9][0-9]{0,17}$')
    GROUP BY u.key
),
pending AS (
    SELECT coalesce(owner::text, 'none') AS tenant, count(*) AS pending
    FROM tasks
    WHERE status = 'pending' AND %(with_pending)s
    GROUP BY owner
)
SELECT t.tenant = 'none' AS no_owner,
       k.id AS key_id,
       k.name,
       k.revoked_at IS NOT NULL AS revoked,
       coalesce(k.weight, 1) AS weight,
       coalesce(u.cpu_seconds, 0) AS cpu_seconds,
       coalesce(u.cpu_seconds_last_minute, 0) AS cpu_seconds_last_minute,
       coalesce(u.running, 0) AS running,
       coalesce(p.pending, 0) AS pending
FROM (SELECT tenant FROM usage UNION SELECT tenant FROM pending) t
LEFT JOIN usage u USING (tenant)
LEFT JOIN pending p USING (tenant)
LEFT JOIN api_keys k ON k.id = CASE WHEN t.tenant = 'none' THEN NULL ELSE t.tenant::bigint END
ORDER BY t.tenant
