-- The dashboard's task list: the newest tasks, all of them or of one status
-- (%(status)s NULL: all). Newest first by id, through the primary key, or
-- through the partial indexes of pending rows (001) and error rows (008).
SELECT id, expression, variables, status, result, error, attempts,
       extract(epoch FROM finished_at - created_at)::float8 AS seconds,
       created_at, finished_at,
       status = 'pending' AND lease_token IS NOT NULL AND process_at > now() AS leased
FROM tasks
WHERE %(status)s::text IS NULL OR status = %(status)s::text
ORDER BY id DESC
LIMIT %(limit)s
