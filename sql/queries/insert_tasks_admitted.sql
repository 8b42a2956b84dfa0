-- A bulk submission through the API with a key or with limits set: all
-- items admitted together by admit_submission() (sql/010), or none. The
-- items get consecutive fair rounds from the first one, and ids in their
-- order (ORDER BY position), as the plain bulk INSERT does. Returns the new
-- ids, or, when refused, one row that tells why (refused, detail). Every
-- item gets the same trace context: the submitting request's traceparent
-- when the API traces (api/tracing.py), else NULL (sql/015). Variables that
-- are -0.0 are named in variables_negative_zero (sql/016, sql/019), as
-- api/admission.py's INSERTs do.
WITH admitted AS (
    SELECT * FROM admit_submission(%(owner)s::bigint, %(items)s::integer, %(max_pending)s::integer,
                                   %(request_rate)s::float8, %(request_burst)s::float8,
                                   %(item_rate)s::float8, %(item_burst)s::float8)
),
inserted AS (
    INSERT INTO tasks (expression, variables, variables_negative_zero, owner, fair_round, trace_context)
    SELECT item.expression, item.variables::jsonb,
           variables_negative_zero_of(item.variables),
           %(owner)s::bigint, admitted.first_round + item.position - 1,
           %(trace_context)s::text
    FROM admitted,
         unnest(%(expressions)s::text[], %(variables)s::text[]) WITH ORDINALITY
             AS item(expression, variables, position)
    WHERE admitted.refused IS NULL
    ORDER BY item.position
    RETURNING id
)
SELECT id, NULL::text AS refused, NULL::float8 AS detail FROM inserted
UNION ALL
SELECT NULL, refused, detail FROM admitted WHERE refused IS NOT NULL
