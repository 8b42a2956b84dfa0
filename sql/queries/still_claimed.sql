-- Which of these claims still hold: the task is pending under this very
-- lease token. Used for outcomes store_results.sql did not store: those still
-- held were skipped because another session had their row locked (store them
-- later); the others are stale (another Calculator took the task over).
SELECT t.id
FROM tasks t
JOIN unnest(%(ids)s::bigint[], %(tokens)s::uuid[]) AS held(id, lease_token)
  ON t.id = held.id AND t.lease_token = held.lease_token
WHERE t.status = 'pending'
