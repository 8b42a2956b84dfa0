-- One task, every column a person may want to see (the dashboard's detail).
-- Variables and result as json, each -0.0 with its sign (sql/016).
SELECT t.id, t.expression, signed_variables(t.variables, t.variables_negative_zero) AS variables,
       t.status, signed_result(t.result, t.result_negative_zero) AS result,
       t.error, t.attempts,
       extract(epoch FROM t.finished_at - t.created_at)::float8 AS seconds,
       t.created_at, t.finished_at, t.process_at,
       t.status = 'pending' AND t.lease_token IS NOT NULL AND t.process_at > now() AS leased,
       (SELECT k.name FROM api_keys k WHERE k.id = t.owner) AS owner_name
FROM tasks t
WHERE t.id = %(id)s
