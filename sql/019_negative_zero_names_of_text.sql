-- The variables_negative_zero of a task's variables as the API sends them
-- (JSON text), in one place for its three INSERTs (api/admission.py's two,
-- sql/queries/insert_tasks_admitted.sql), which each wrote the same CASE:
-- only text with "-0" in it is read a second time, as json, by
-- negative_zero_names() (sql/016); NULL otherwise. A simple SQL function:
-- the planner inlines it into the INSERT.
CREATE FUNCTION variables_negative_zero_of(variables text) RETURNS text[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN strpos(variables, '-0') > 0 THEN negative_zero_names(variables::json) END
$$;
