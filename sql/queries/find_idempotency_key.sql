-- The request a current Idempotency-Key of one API key (owner; 0 without
-- keys) was first used with, and its ids.
SELECT fingerprint, expression_ids
FROM idempotency_keys
WHERE owner = %(owner)s AND key = %(key)s AND created_at >= now() - interval '24 hours'
