-- "One outcome, ever", held by the database itself rather than by a query:
-- once a task has left 'pending' (done, error, or any status added later,
-- such as a cancellation), its status, result and error can no longer be
-- changed by anybody, the schema owner included. Rows may still be deleted
-- (retention). A deliberate correction is possible only by an owner who
-- disables this trigger first, on purpose.
--
-- The store and claim queries already touch only pending rows; this makes a
-- stray UPDATE from psql or a bug in some other client fail loudly instead of
-- silently re-queueing or rewriting an outcome.
CREATE FUNCTION refuse_changing_finished_tasks() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.status <> 'pending'
       AND (NEW.status IS DISTINCT FROM OLD.status
            OR NEW.result IS DISTINCT FROM OLD.result
            OR NEW.error IS DISTINCT FROM OLD.error) THEN
        RAISE EXCEPTION 'task % is finished (%): its outcome cannot be changed', OLD.id, OLD.status
            USING ERRCODE = 'restrict_violation',
                  HINT = 'a finished task keeps its one outcome; insert a new task instead';
    END IF;
    RETURN NEW;
END;
$$;

CREATE TRIGGER tasks_finished_are_final
    BEFORE UPDATE OF status, result, error ON tasks
    FOR EACH ROW
    WHEN (OLD.status <> 'pending')
    EXECUTE FUNCTION refuse_changing_finished_tasks();

