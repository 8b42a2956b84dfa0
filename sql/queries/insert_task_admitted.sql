-- One submission through the API with a key or with limits set: admitted by
-- admit_submission() (sql/010_api_keys_and_fair_claiming.sql), which raises
-- (nothing inserted) past a limit and gives the task its fair round.
INSERT INTO tasks (expression, variables, owner, fair_round)
SELECT %(expression)s, %(variables)s::jsonb, %(owner)s::bigint, admitted.first_round
FROM admit_submission(%(owner)s::bigint, %(items)s::integer, %(max_pending)s::integer,
                      %(request_rate)s::float8, %(request_burst)s::float8,
                      %(item_rate)s::float8, %(item_burst)s::float8) AS admitted(first_round)
RETURNING id
