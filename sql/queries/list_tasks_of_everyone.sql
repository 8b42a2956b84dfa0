-- GET /api/tasks for everyone's tasks (an admin, AUTH=off): as
-- list_tasks_of_owner.sql, each status through its own index: pending
-- (tasks_pending_by_id, sql/001), error (tasks_errors_by_id, sql/008),
-- cancelled (sql/013), done down the primary key (most rows are done).
-- Variables and result as json, each -0.0 with its sign (sql/016).
SELECT t.id, t.status, t.expression, signed_variables(t.variables, t.variables_negative_zero) AS variables,
       signed_result(t.result, t.result_negative_zero) AS result,
       t.error, t.attempts,
       t.created_at, t.finished_at,
       extract(epoch FROM t.finished_at - t.created_at)::float8 AS seconds,
       t.status = 'pending' AND t.lease_token IS NOT NULL AND t.process_at > now() AS leased,
       (SELECT k.name FROM api_keys k WHERE k.id = t.owner) AS owner_name
FROM (
    (SELECT * FROM tasks t
     WHERE t.status = 'pending' AND t.id < %(before)s
       AND 'pending' = ANY(%(statuses)s::text[])
       AND (%(since)s::timestamptz IS NULL OR t.created_at >= %(since)s::timestamptz)
       AND (%(until)s::timestamptz IS NULL OR t.created_at < %(until)s::timestamptz)
     ORDER BY t.id DESC LIMIT %(limit)s)
    UNION ALL
    (SELECT * FROM tasks t
     WHERE t.status = 'done' AND t.id < %(before)s
       AND 'done' = ANY(%(statuses)s::text[])
       AND (%(since)s::timestamptz IS NULL OR t.created_at >= %(since)s::timestamptz)
       AND (%(until)s::timestamptz IS NULL OR t.created_at < %(until)s::timestamptz)
     ORDER BY t.id DESC LIMIT %(limit)s)
    UNION ALL
    (SELECT * FROM tasks t
     WHERE t.status = 'error' AND t.id < %(before)s
       AND 'error' = ANY(%(statuses)s::text[])
       AND (%(since)s::timestamptz IS NULL OR t.created_at >= %(since)s::timestamptz)
       AND (%(until)s::timestamptz IS NULL OR t.created_at < %(until)s::timestamptz)
     ORDER BY t.id DESC LIMIT %(limit)s)
    UNION ALL
    (SELECT * FROM tasks t
     WHERE t.status = 'cancelled' AND t.id < %(before)s
       AND 'cancelled' = ANY(%(statuses)s::text[])
       AND (%(since)s::timestamptz IS NULL OR t.created_at >= %(since)s::timestamptz)
       AND (%(until)s::timestamptz IS NULL OR t.created_at < %(until)s::timestamptz)
     ORDER BY t.id DESC LIMIT %(limit)s)
) AS t
ORDER BY t.id DESC
LIMIT %(limit)s
