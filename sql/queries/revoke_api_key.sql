-- python -m api.keys revoke: the live key of that name stops working at once
-- (the API reads the row on every request). Its tasks stay, still its own.
-- Names are compared without case, as the unique index api_keys_live_name
-- compares them when a key is created: `revoke BOB` revokes bob.
UPDATE api_keys SET revoked_at = now()
WHERE lower(name) = lower(%(name)s) AND revoked_at IS NULL
RETURNING id, name
