-- store_results.sql for a batch with rows another session holds locked (an
-- operator's open transaction, say): those are passed over, not waited for,
-- and the rest of the batch is stored now. The caller asks still_claimed.sql
-- which of those not stored are still its own (locked: try again later)
-- rather than stale. The same fence: the lease token and status = 'pending'.
--
-- The ids stored are announced on the results_stored channel, for API
-- processes with clients waiting on a result (GET /api/result/<id>?wait=).
-- A payload is limited to 8000 bytes: a batch too large to list says '*',
-- "check everything you wait for".
--
-- Parameters are parallel arrays: ids, lease tokens, results (JSON text or
-- NULL) and errors (text or NULL). A result -0.0 is stored as
-- store_results.sql says (sql/016).
WITH outcome AS (
    SELECT *
    FROM unnest(%(ids)s::bigint[], %(tokens)s::uuid[], %(results)s::text[], %(errors)s::text[])
        AS o(id, lease_token, result, error)
),
mine AS (
    SELECT t.id
    FROM tasks t JOIN outcome o ON t.id = o.id
    WHERE t.lease_token = o.lease_token AND t.status = 'pending'
    FOR UPDATE OF t SKIP LOCKED
),
stored AS (
    UPDATE tasks t
    SET status = CASE WHEN o.error IS NULL THEN 'done' ELSE 'error' END,
        result = o.result::jsonb,
        result_negative_zero = coalesce(o.result = '-0.0', false),
        error = o.error,
        finished_at = clock_timestamp()
    FROM outcome o, mine m
    WHERE t.id = o.id AND t.id = m.id
    RETURNING t.id
),
announced AS (
    SELECT pg_notify('results_stored', CASE WHEN length(ids) <= 7900 THEN ids ELSE '*' END)
    FROM (SELECT string_agg(id::text, ',') AS ids FROM stored) AS batch
    WHERE ids IS NOT NULL
)
SELECT id FROM stored, (SELECT count(*) FROM announced) AS notified
