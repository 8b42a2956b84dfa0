-- python -m api.keys create: a new key's row. Only the SHA-256 of its secret
-- is stored; the key itself is printed once and kept nowhere.
INSERT INTO api_keys (name, secret_sha256, is_admin)
VALUES (%(name)s, %(secret_sha256)s, %(is_admin)s)
RETURNING id
