-- The task queue. One row per submitted expression, from submission to result.
--
-- id, expression and variables are the public interface: psql users and
-- scripts insert those three (or just the first two) and read the rest.

CREATE TABLE tasks (
    id          bigserial   PRIMARY KEY,
    expression  text        NOT NULL,
    variables   jsonb       NOT NULL DEFAULT '{}'::jsonb,
    created_at  timestamptz NOT NULL DEFAULT clock_timestamp(),

    -- 'pending' until a Calculator stores the outcome, then 'done' or 'error'.
    status      text        NOT NULL DEFAULT 'pending',
    -- The lease: a pending task may be claimed when process_at <= now().
    -- A claim moves it into the future; if the Calculator dies, the task
    -- becomes claimable again when that time passes.
    process_at  timestamptz NOT NULL DEFAULT now(),
    -- How many times the task has been claimed (it counts towards MAX_ATTEMPTS).
    attempts    integer     NOT NULL DEFAULT 0,
    -- Set afresh by every claim. A result is stored only together with the
    -- token of the claim that computed it, so a late Calculator whose task
    -- was taken over cannot overwrite anything (fencing).
    lease_token uuid,

    result      jsonb,       -- a JSON number or boolean, when status = 'done'
    error       text,        -- a message for people, when status = 'error'
    finished_at timestamptz,

    CONSTRAINT tasks_status_is_known CHECK (status IN ('pending', 'done', 'error')),
    CONSTRAINT tasks_outcome_matches_status CHECK (
        CASE status
            WHEN 'pending' THEN result IS NULL AND error IS NULL AND finished_at IS NULL
            WHEN 'done' THEN result IS NOT NULL AND error IS NULL AND finished_at IS NOT NULL
            WHEN 'error' THEN result IS NULL AND error IS NOT NULL AND finished_at IS NOT NULL
        END)
);

COMMENT ON TABLE tasks IS
    'Calculator task queue: INSERT (expression, variables) to enqueue; status/result/error tell the outcome.';

-- Finished rows are never looked at by the claim query, so they stay out of
-- its index: the index holds only the queue itself, however long the history.
CREATE INDEX tasks_pending_by_id ON tasks (id) WHERE status = 'pending';

-- One notification per INSERT statement, however many rows it inserts
-- (and PostgreSQL folds identical notifications within a transaction).
CREATE FUNCTION notify_tasks_inserted() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('tasks_inserted', '');
    RETURN NULL;
END;
$$;

CREATE TRIGGER tasks_inserted_notify
    AFTER INSERT ON tasks
    FOR EACH STATEMENT
    EXECUTE FUNCTION notify_tasks_inserted();
