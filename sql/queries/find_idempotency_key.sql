-- The request a current Idempotency-Key was first used with, and its ids.
SELECT fingerprint, expression_ids
FROM idempotency_keys
WHERE key = %(key)s AND created_at >= now() - interval '24 hours'
