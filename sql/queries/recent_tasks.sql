-- The dashboard's task list: the newest tasks, all of them or of one status
-- (%(status)s NULL: all). Newest first by id, through the primary key, or
-- through the partial indexes of pending rows (001) and error rows (008);
-- with the name of the key that submitted each (NULL: nobody).
SELECT t.id, t.expression, t.variables, t.status, t.result, t.error, t.attempts,
       extract(epoch FROM t.finished_at - t.created_at)::float8 AS seconds,
       t.created_at, t.finished_at,
       t.status = 'pending' AND t.lease_token IS NOT NULL AND t.process_at > now() AS leased,
       (SELECT k.name FROM api_keys k WHERE k.id = t.owner) AS owner_name
FROM tasks t
WHERE %(status)s::text IS NULL OR t.status = %(status)s::text
ORDER BY t.id DESC
LIMIT %(limit)s
