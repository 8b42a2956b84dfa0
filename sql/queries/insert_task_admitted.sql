-- One submission through the API with a key or with limits set, admitted by
-- admit_submission() (sql/010_api_keys_and_fair_claiming.sql), which also
-- gives the task its fair round. Returns the new id, or, when refused,
-- nothing is inserted and one row tells why (refused, detail).
WITH admitted AS (
    SELECT * FROM admit_submission(%(owner)s::bigint, %(items)s::integer, %(max_pending)s::integer,
                                   %(request_rate)s::float8, %(request_burst)s::float8,
                                   %(item_rate)s::float8, %(item_burst)s::float8)
),
inserted AS (
    INSERT INTO tasks (expression, variables, owner, fair_round)
    SELECT %(expression)s, %(variables)s::jsonb, %(owner)s::bigint, admitted.first_round
    FROM admitted
    WHERE admitted.refused IS NULL
    RETURNING id
)
SELECT id, NULL::text AS refused, NULL::float8 AS detail FROM inserted
UNION ALL
SELECT NULL, refused, detail FROM admitted WHERE refused IS NOT NULL
