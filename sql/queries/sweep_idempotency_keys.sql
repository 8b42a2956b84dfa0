-- Keys older than 24 hours are forgotten (the API runs this now and then).
DELETE FROM idempotency_keys WHERE created_at < now() - interval '24 hours'
