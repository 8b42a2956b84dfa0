-- Negative zero, kept. A float result or variable may be -0.0 (Python's
-- `-0.0`, `-0.0*2.5`, `1/x` with x = -0.0 ...), but jsonb stores numbers as
-- numeric, which has no negative zero: '-0.0'::jsonb is 0.0. So the sign is
-- held in a column beside each jsonb, and the database checks that the two
-- agree:
--
--   result_negative_zero     true: the result is -0.0 (result holds 0.0);
--   variables_negative_zero  the names of the variables that are -0.0 (each
--                            holds 0.0, or 0.00 ..., in variables); NULL: none.
--
-- A psql user reads them with signed_result() and signed_variables(), which
-- give the values as json (not jsonb: json keeps the text, so -0.0 stays
-- -0.0), and inserts a variable -0.0 by naming it:
--
--   INSERT INTO tasks (expression, variables, variables_negative_zero)
--   VALUES ('1/x', '{"x": 0.0}', '{x}');
--
-- (or with negative_zero_names('{"x": -0.0}'::json), which finds them in
-- JSON text). The API fills variables_negative_zero with that function, in
-- the same INSERT, and the Calculator sets result_negative_zero in the same
-- UPDATE that stores the result: no statement and no row version is added.
--
-- Existing rows: both columns come with a constant default (false, NULL),
-- which PostgreSQL records in the catalog without rewriting the table; their
-- signs were lost before this migration and stay lost.

-- A float zero in jsonb's own form: a number equal to 0 with digits after
-- the point (0.0, 0.00; jsonb writes 0e-3 as 0.000). An integer 0 has no
-- sign to keep (core/numbers.py: no fraction digits, an integer).
CREATE FUNCTION is_float_zero(value jsonb) RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT coalesce(jsonb_typeof(value) = 'number' AND value::text ~ '^0\.0+$', false)
$$;

-- True when every name is a key of variables whose value is a float zero.
-- PL/pgSQL: a loop of simple expressions costs a few microseconds a row,
-- where a SQL function with an aggregate (not inlined) started an executor
-- for every call, and the check runs at every UPDATE of such a row (its
-- claim, its store): 0.63x of the drain rate when every task had a -0.0
-- variable (BENCHMARKS.md).
CREATE FUNCTION are_float_zeros(variables jsonb, names text[]) RETURNS boolean
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
    name text;
BEGIN
    IF names IS NULL THEN
        RETURN true;
    END IF;
    IF jsonb_typeof(variables) <> 'object' THEN
        RETURN cardinality(names) = 0;
    END IF;
    FOREACH name IN ARRAY names LOOP
        IF name IS NULL OR NOT is_float_zero(variables -> name) THEN
            RETURN false;
        END IF;
    END LOOP;
    RETURN true;
END;
$$;

-- The names of the float zeros written with a minus sign in a JSON object's
-- text (json, not jsonb: the text as written), NULL when there are none or
-- when it is not an object.
CREATE FUNCTION negative_zero_names(variables json) RETURNS text[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT array_agg(key ORDER BY key)
    FROM json_each(CASE WHEN json_typeof(variables) = 'object' THEN variables ELSE '{}' END)
    WHERE json_typeof(value) = 'number' AND value::text LIKE '-%'
      AND value::text::numeric = 0 AND scale(value::text::numeric) > 0
$$;

-- A task's result as json, with its sign.
CREATE FUNCTION signed_result(result jsonb, negative_zero boolean) RETURNS json
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN negative_zero THEN '-0.0'::json ELSE result::json END
$$;

-- An object's values as json, those named with a minus sign.
CREATE FUNCTION with_negative_zeros(variables jsonb, names text[]) RETURNS json
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT json_object_agg(key, CASE WHEN key = ANY(names) THEN ('-' || value::text)::json
                                     ELSE value::json END)
    FROM jsonb_each(variables)
$$;

-- A task's variables as json, each -0.0 with its sign. Inlined by the
-- planner into the queries that call it (no sub-select of its own), so that
-- the usual row, without a negative zero, costs a cast and no function call.
CREATE FUNCTION signed_variables(variables jsonb, negative_zero text[]) RETURNS json
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN negative_zero IS NULL OR cardinality(negative_zero) = 0 THEN variables::json
                ELSE with_negative_zeros(variables, negative_zero) END
$$;

ALTER TABLE tasks
    ADD COLUMN result_negative_zero boolean NOT NULL DEFAULT false,
    ADD COLUMN variables_negative_zero text[];

COMMENT ON COLUMN tasks.result_negative_zero IS
    'true: the result is -0.0 (jsonb holds 0.0); read the result with signed_result(result, result_negative_zero)';
COMMENT ON COLUMN tasks.variables_negative_zero IS
    'names of the variables that are -0.0 (jsonb holds 0.0); read them with signed_variables(variables, variables_negative_zero)';

-- NOT VALID: every existing row holds the defaults, which satisfy both, so a
-- long history is not scanned under this ALTER's lock; new and updated rows
-- are checked all the same.
ALTER TABLE tasks ADD CONSTRAINT tasks_result_negative_zero_is_a_float_zero
    CHECK (NOT result_negative_zero OR (status = 'done' AND is_float_zero(result))) NOT VALID;
ALTER TABLE tasks ADD CONSTRAINT tasks_variables_negative_zero_are_float_zeros
    CHECK (variables_negative_zero IS NULL OR are_float_zeros(variables, variables_negative_zero)) NOT VALID;

GRANT INSERT (variables_negative_zero) ON tasks TO calculator_api;
GRANT UPDATE (result_negative_zero) ON tasks TO calculator_worker;

-- A finished row is final as a whole (sql/009, sql/010): the signs too.
CREATE OR REPLACE FUNCTION refuse_changing_finished_tasks() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.status <> 'pending'
       AND (NEW.status IS DISTINCT FROM OLD.status
            OR NEW.result IS DISTINCT FROM OLD.result
            OR NEW.result_negative_zero IS DISTINCT FROM OLD.result_negative_zero
            OR NEW.error IS DISTINCT FROM OLD.error
            OR NEW.expression IS DISTINCT FROM OLD.expression
            OR NEW.variables IS DISTINCT FROM OLD.variables
            OR NEW.variables_negative_zero IS DISTINCT FROM OLD.variables_negative_zero
            OR NEW.created_at IS DISTINCT FROM OLD.created_at
            OR NEW.finished_at IS DISTINCT FROM OLD.finished_at
            OR NEW.owner IS DISTINCT FROM OLD.owner
            OR NEW.id IS DISTINCT FROM OLD.id) THEN
        RAISE EXCEPTION 'task % is finished (%): its outcome cannot be changed', OLD.id, OLD.status
            USING ERRCODE = 'restrict_violation',
                  HINT = 'a finished task keeps its expression and its one outcome; insert a new task instead';
    END IF;
    RETURN NEW;
END;
$$;

DROP TRIGGER tasks_finished_are_final ON tasks;
CREATE TRIGGER tasks_finished_are_final
    BEFORE UPDATE OF status, result, result_negative_zero, error, expression, variables,
                     variables_negative_zero, created_at, finished_at, owner, id ON tasks
    FOR EACH ROW
    WHEN (OLD.status <> 'pending')
    EXECUTE FUNCTION refuse_changing_finished_tasks();

-- task_outcomes() (sql/007), the API's read rule for psql, gives the result
-- as the API does: json, -0.0 with its sign. Its callers (cancel_tasks())
-- read only the id and the status.
DROP FUNCTION task_outcomes(bigint[]);
CREATE FUNCTION task_outcomes(ids bigint[])
RETURNS TABLE (id bigint, status text, result json, error text)
LANGUAGE sql STABLE AS $$
    SELECT wanted.id,
           coalesce(t.status, CASE WHEN wanted.id <= r.purged_through THEN 'expired' ELSE 'unknown' END),
           signed_result(t.result, t.result_negative_zero), t.error
    FROM unnest(ids) WITH ORDINALITY AS wanted(id, position)
    CROSS JOIN task_retention r
    LEFT JOIN tasks t ON t.id = wanted.id
    ORDER BY wanted.position
$$;
