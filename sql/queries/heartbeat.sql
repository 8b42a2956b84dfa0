-- Register (or re-register after an outage) and say this Calculator is alive,
-- with its figures for GET /metrics (worker/metrics.py); sweep registrations
-- whose heartbeat stopped long ago.
WITH swept AS (
    DELETE FROM calculators WHERE heartbeat_at < now() - interval '1 hour'
)
INSERT INTO calculators AS c (id, hostname, pid, settings, metrics)
VALUES (%(id)s, %(hostname)s, %(pid)s, %(settings)s, %(metrics)s)
ON CONFLICT (id) DO UPDATE SET heartbeat_at = now(), metrics = EXCLUDED.metrics
