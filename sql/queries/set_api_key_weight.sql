-- python -m api.keys set-weight: the live key of that name (compared without
-- case, as revoke_api_key.sql) gets a new weight, which the Calculators read
-- at their next claim. sql/017_fair_share_of_time.sql checks its range.
UPDATE api_keys SET weight = %(weight)s
WHERE lower(name) = lower(%(name)s) AND revoked_at IS NULL
RETURNING id, name
