-- A finished row is final as a whole, not only its outcome (found by an
-- outside test: after 005, `UPDATE tasks SET expression = '1+1'` on a done
-- task succeeded, and the page showed "1+1 = 110"; moving finished_at back
-- made retention delete a fresh result). The expression, the variables, when
-- it was created and finished, and the outcome can no longer change once the
-- status has left 'pending'. Queue bookkeeping (process_at, attempts,
-- lease_token) stays writable: it means nothing for a finished row, and a
-- late lease extension must not fail. DELETE stays allowed (retention).
CREATE OR REPLACE FUNCTION refuse_changing_finished_tasks() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.status <> 'pending'
       AND (NEW.status IS DISTINCT FROM OLD.status
            OR NEW.result IS DISTINCT FROM OLD.result
            OR NEW.error IS DISTINCT FROM OLD.error
            OR NEW.expression IS DISTINCT FROM OLD.expression
            OR NEW.variables IS DISTINCT FROM OLD.variables
            OR NEW.created_at IS DISTINCT FROM OLD.created_at
            OR NEW.finished_at IS DISTINCT FROM OLD.finished_at
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
    BEFORE UPDATE OF status, result, error, expression, variables, created_at, finished_at, id ON tasks
    FOR EACH ROW
    WHEN (OLD.status <> 'pending')
    EXECUTE FUNCTION refuse_changing_finished_tasks();
