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
-- NULL) and errors (text or NULL); a row finds its own by array_position.
-- A result -0.0 (the JSON text the Calculator writes for it, core/numbers.py)
-- is stored as 0.0 with result_negative_zero set (sql/016: jsonb has no
-- negative zero).
--
-- No join on purpose: the cost of a store is its own rows, whatever the
-- planner believes about the queue. Joined to unnest(...) on id, after an
-- ANALYZE that saw a long history and no pending rows the planner estimates
-- "1 pending row" and hash-joins against a scan of every pending row (the
-- whole queue, dead index entries included) on every store: that is why one
-- Calculator's drain rate fell to 0.5-0.66x with 5M finished rows
-- (bench/growth.py, BENCHMARKS.md). Here both indexes on id can only be
-- searched for the batch's ids.
WITH stored AS (
    UPDATE tasks t
    SET status = CASE WHEN (%(errors)s::text[])[array_position(%(ids)s::bigint[], t.id)] IS NULL
                      THEN 'done' ELSE 'error' END,
        result = ((%(results)s::text[])[array_position(%(ids)s::bigint[], t.id)])::jsonb,
        result_negative_zero = coalesce((%(results)s::text[])[array_position(%(ids)s::bigint[], t.id)] = '-0.0',
                                        false),
        error = (%(errors)s::text[])[array_position(%(ids)s::bigint[], t.id)],
        finished_at = clock_timestamp()
    WHERE t.id = ANY(%(ids)s::bigint[])
      AND t.lease_token = (%(tokens)s::uuid[])[array_position(%(ids)s::bigint[], t.id)]
      AND t.status = 'pending'
    RETURNING t.id
),
announced AS (
    SELECT pg_notify('results_stored', CASE WHEN length(ids) <= 7900 THEN ids ELSE '*' END)
    FROM (SELECT string_agg(id::text, ',') AS ids FROM stored) AS batch
    WHERE ids IS NOT NULL
)
SELECT id FROM stored, (SELECT count(*) FROM announced) AS notified
