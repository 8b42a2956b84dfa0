-- A bulk submission through the API with a key or with limits set: all
-- items admitted together by admit_submission() (sql/010), or none (it
-- raises). The items get consecutive fair rounds from the first one, and ids
-- in their order (ORDER BY position), as the plain bulk INSERT does.
INSERT INTO tasks (expression, variables, owner, fair_round)
SELECT item.expression, item.variables::jsonb, %(owner)s::bigint, admitted.first_round + item.position - 1
FROM admit_submission(%(owner)s::bigint, %(items)s::integer, %(max_pending)s::integer,
                      %(request_rate)s::float8, %(request_burst)s::float8,
                      %(item_rate)s::float8, %(item_burst)s::float8) AS admitted(first_round),
     unnest(%(expressions)s::text[], %(variables)s::text[]) WITH ORDINALITY
         AS item(expression, variables, position)
ORDER BY item.position
RETURNING id
