-- python -m api.keys list: every key, live and revoked, with its weight and
-- its unfinished tasks (through the index of pending tasks by owner).
SELECT k.id, k.name, k.is_admin, k.created_at, k.revoked_at, k.weight,
       (SELECT count(*) FROM tasks t
        WHERE t.owner = k.id AND t.status = 'pending' AND t.owner IS NOT NULL) AS pending
FROM api_keys k
ORDER BY k.id
