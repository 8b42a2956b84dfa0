-- Live Calculators, for GET /api/stats and for operators: each Calculator
-- registers at start, heartbeats while it runs and deregisters when it stops
-- cleanly. One that died simply stops heartbeating; readers count only
-- recent heartbeats, and old rows are swept by the Calculators themselves.
CREATE TABLE calculators (
    id            uuid        PRIMARY KEY,
    hostname      text        NOT NULL,
    pid           integer     NOT NULL,
    settings      jsonb       NOT NULL DEFAULT '{}'::jsonb,
    started_at    timestamptz NOT NULL DEFAULT now(),
    heartbeat_at  timestamptz NOT NULL DEFAULT now()
);

GRANT SELECT ON calculators TO calculator_api;
GRANT SELECT, INSERT, UPDATE, DELETE ON calculators TO calculator_worker;

-- Results per second over the last minute, for GET /api/stats.
CREATE INDEX tasks_finished_at ON tasks (finished_at) WHERE finished_at IS NOT NULL;
