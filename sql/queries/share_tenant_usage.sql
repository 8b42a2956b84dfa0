-- A Calculator's charges per tenant, shared (worker/fair_share.py): write
-- this Calculator's tenant_usage (sql/017) and read the other live
-- Calculators' (heartbeat less than 15 s old, as live_calculators.sql says)
-- (with their MAX_RUNNING_PER_KEY, which must be the same everywhere) and
-- the weights of the keys whose weight is not 1, in one round trip. The
-- SELECT reads the snapshot taken before the UPDATE: it reads the others'
-- rows, not its own.
WITH mine AS (
    UPDATE calculators SET tenant_usage = %(usage)s WHERE id = %(id)s
)
SELECT 'calculator' AS kind, c.id::text AS name, c.tenant_usage AS value,
       c.settings -> 'max_running_per_key' AS max_running_per_key
FROM calculators c
WHERE c.id <> %(id)s AND c.heartbeat_at > now() - interval '15 seconds'
UNION ALL
SELECT 'weight', k.id::text, to_jsonb(k.weight), NULL
FROM api_keys k
WHERE k.weight <> 1
