-- GET /api/stats: the queue, the outcomes and the live Calculators, in one
-- round trip. The pending counts use the partial index of pending rows; the
-- done/error totals scan the table (fine for millions of rows, a second or
-- so beyond that: use the per-minute figures for dashboards).
SELECT
    count(*) FILTER (WHERE status = 'pending' AND lease_token IS NULL)                       AS queued,
    count(*) FILTER (WHERE status = 'pending' AND lease_token IS NOT NULL AND process_at > now())  AS leased,
    count(*) FILTER (WHERE status = 'pending' AND lease_token IS NOT NULL AND process_at <= now()) AS expired_leases,
    count(*) FILTER (WHERE status = 'done')                                                  AS done,
    count(*) FILTER (WHERE status = 'error')                                                 AS errors,
    extract(epoch FROM now() - min(created_at) FILTER (WHERE status = 'pending'))            AS oldest_pending_seconds,
    (SELECT count(*) FROM tasks WHERE finished_at > now() - interval '1 minute') / 60.0     AS results_per_second,
    (SELECT count(*) FROM calculators WHERE heartbeat_at > now() - interval '15 seconds')    AS live_calculators
FROM tasks
