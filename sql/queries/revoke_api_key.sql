-- python -m api.keys revoke: the live key of that name stops working at once
-- (the API reads the row on every request). Its tasks stay, still its own.
UPDATE api_keys SET revoked_at = now()
WHERE name = %(name)s AND revoked_at IS NULL
RETURNING id
