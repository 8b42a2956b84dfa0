-- Least privilege: two group roles (NOLOGIN) that deployments grant to their
-- login users. Roles are cluster-wide, so they are created only if missing;
-- the grants are per database.
--
--   calculator_api     inserts expressions and reads outcomes; cannot
--                      change or delete a task, or forge an outcome.
--   calculator_worker  reads tasks and updates only the queue and outcome
--                      columns; cannot insert or delete tasks, or change
--                      what a task asks.
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'calculator_api') THEN
        CREATE ROLE calculator_api NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'calculator_worker') THEN
        CREATE ROLE calculator_worker NOLOGIN;
    END IF;
END
$$;

GRANT USAGE ON SCHEMA public TO calculator_api, calculator_worker;
GRANT SELECT ON schema_migrations TO calculator_api, calculator_worker;

GRANT SELECT ON tasks TO calculator_api;
GRANT INSERT (expression, variables) ON tasks TO calculator_api;
GRANT USAGE ON SEQUENCE tasks_id_seq TO calculator_api;

GRANT SELECT ON tasks TO calculator_worker;
GRANT UPDATE (status, process_at, attempts, lease_token, result, error, finished_at)
    ON tasks TO calculator_worker;
