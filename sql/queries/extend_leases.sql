-- Keep the claims a live Calculator still holds: push their lease forward.
-- Only rows still pending under the same token are touched.
UPDATE tasks t
SET process_at = now() + make_interval(secs => %(lease_seconds)s)
FROM unnest(%(ids)s::bigint[], %(tokens)s::uuid[]) AS held(id, lease_token)
WHERE t.id = held.id AND t.lease_token = held.lease_token AND t.status = 'pending'
