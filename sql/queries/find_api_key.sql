-- The key a request presents, by the id in it (api/auth.py compares the
-- secret's SHA-256 with secret_sha256 in constant time).
SELECT name, secret_sha256, is_admin, revoked_at IS NOT NULL AS revoked
FROM api_keys
WHERE id = %(id)s
