#!/bin/sh
# First start of the database container only: the login users of the API and
# the Calculator. The group roles hold the privileges (sql/002_roles.sql
# grants them); they are created here too, so that membership can be granted
# before the migrations have run.
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
     -v api_password="$CALCULATOR_API_PASSWORD" -v worker_password="$CALCULATOR_WORKER_PASSWORD" <<'SQL'
SELECT 'CREATE ROLE calculator_api NOLOGIN'
    WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'calculator_api') \gexec
SELECT 'CREATE ROLE calculator_worker NOLOGIN'
    WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'calculator_worker') \gexec
CREATE ROLE api_user LOGIN PASSWORD :'api_password' IN ROLE calculator_api;
CREATE ROLE worker_user LOGIN PASSWORD :'worker_password' IN ROLE calculator_worker;
-- The API's session settings as the login's own (api/db.py sets the same on
-- each pooled connection): behind PgBouncer in transaction mode a client's
-- SET would land on whichever server connection served it.
ALTER ROLE api_user SET statement_timeout = '5s';
ALTER ROLE api_user SET calculator.notify_after_commit = on;
SQL
