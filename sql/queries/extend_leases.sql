-- Keep the claims a live Calculator still holds: push their lease forward.
-- Only rows still pending under the same token are touched; a row another
-- session holds locked is skipped this time (not waited for) and extended at
-- the next round (nobody can claim it meanwhile: claims skip locked rows too).
UPDATE tasks t
SET process_at = now() + make_interval(secs => %(lease_seconds)s)
FROM (
    SELECT t.id
    FROM tasks t
    JOIN unnest(%(ids)s::bigint[], %(tokens)s::uuid[]) AS held(id, lease_token)
      ON t.id = held.id AND t.lease_token = held.lease_token
    WHERE t.status = 'pending'
    FOR UPDATE OF t SKIP LOCKED
) AS mine
WHERE t.id = mine.id
