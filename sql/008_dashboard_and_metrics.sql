-- Each Calculator's own figures (claims and their sizes, evaluation
-- durations, timeouts, evaluation processes killed or died, stale results
-- discarded), written with its heartbeat every few seconds and read by the
-- API's GET /metrics: one scrape target for any number of Calculators on any
-- number of machines (see worker/metrics.py and api/metrics.py).
ALTER TABLE calculators ADD COLUMN metrics jsonb NOT NULL DEFAULT '{}'::jsonb;

-- The dashboard's "recent failures" and its error filter read the newest
-- error rows; errors are few, so this index is small, and without it those
-- reads would walk the primary key through every done row of the history.
CREATE INDEX tasks_errors_by_id ON tasks (id) WHERE status = 'error';
