-- One task, every column a person may want to see (the dashboard's detail).
SELECT id, expression, variables, status, result, error, attempts,
       extract(epoch FROM finished_at - created_at)::float8 AS seconds,
       created_at, finished_at, process_at,
       status = 'pending' AND lease_token IS NOT NULL AND process_at > now() AS leased
FROM tasks
WHERE id = %(id)s
