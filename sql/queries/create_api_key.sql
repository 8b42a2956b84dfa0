-- python -m api.keys create: a new key's row. Only the SHA-256 of its secret
-- is stored; the key itself is printed once and kept nowhere. weight: its
-- share of the evaluation time (sql/017_fair_share_of_time.sql checks
-- 0.01 <= weight <= 1000).
INSERT INTO api_keys (name, secret_sha256, is_admin, weight)
VALUES (%(name)s, %(secret_sha256)s, %(is_admin)s, %(weight)s)
RETURNING id
