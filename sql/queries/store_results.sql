-- Store the outcomes of one batch, each only if its claim still holds.
--
-- The lease_token comparison is the fence: if the lease expired and another
-- Calculator claimed the task, the token changed and this row is skipped,
-- while the rest of the batch is stored. status = 'pending' makes the first
-- stored outcome the only one, ever. The ids actually stored are returned,
-- so the caller can log the stale ones.
--
-- A row another session holds locked makes this statement wait, up to the
-- session's lock_timeout (LOCK_TIMEOUT); then the caller stores the batch with
-- store_results_skip_locked.sql, which passes over locked rows. (Locking every
-- row first with SKIP LOCKED, always, costs a quarter of the throughput.)
--
-- The ids stored are announced on the results_stored channel, for API
-- processes with clients waiting on a result (GET /api/result/<id>?wait=).
-- A payload is limited to 8000 bytes: a batch too large to list says '*',
-- "check everything you wait for".
--
-- Parameters are parallel arrays: ids, lease tokens, results (JSON text or
-- NULL) and errors (text or NULL).
WITH outcome AS (
    SELECT *
    FROM unnest(%(ids)s::bigint[], %(tokens)s::uuid[], %(results)s::text[], %(errors)s::text[])
        AS o(id, lease_token, result, error)
),
stored AS (
    UPDATE tasks t
    SET status = CASE WHEN o.error IS NULL THEN 'done' ELSE 'error' END,
        result = o.result::jsonb,
        error = o.error,
        finished_at = clock_timestamp()
    FROM outcome o
    WHERE t.id = o.id AND t.lease_token = o.lease_token AND t.status = 'pending'
    RETURNING t.id
),
announced AS (
    SELECT pg_notify('results_stored', CASE WHEN length(ids) <= 7900 THEN ids ELSE '*' END)
    FROM (SELECT string_agg(id::text, ',') AS ids FROM stored) AS batch
    WHERE ids IS NOT NULL
)
SELECT id FROM stored, (SELECT count(*) FROM announced) AS notified
