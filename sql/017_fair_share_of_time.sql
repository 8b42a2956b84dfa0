-- A fair share of the Calculators' time (docs/design.md, "Fair share of time").
--
-- Tenants: each API key, and rows without an owner (psql, AUTH=off) as one
-- tenant more. Among the tenants with work waiting, each gets a share of the
-- evaluation time (CPU seconds) in proportion to its weight. The Calculators
-- keep each tenant's virtual time (the seconds it used over its weight) and
-- skip, in their claims, the tenants ahead of the others
-- (sql/queries/claim_tasks.sql, worker/fair_share.py); what they charged
-- is shared through their rows in calculators (tenant_usage), written once a
-- second by each Calculator: no row is written per task or per tenant.
--
-- What this migration adds:
--
--   * api_keys.weight: a key's share relative to the others (default 1);
--     python -m api.keys create NAME --weight W, set-weight NAME W.
--   * calculators.tenant_usage: each Calculator's CPU seconds per tenant,
--     since it started and over the last minute, and its running tasks
--     (worker/fair_share.py writes it, the page and GET /metrics read it).
--   * Rows without an owner take turns with the keys: their rounds come
--     from tasks_unowned_round, a sequence (the column's default: one
--     nextval a row, no trigger a row), moved up to the queue's head by a
--     statement trigger before the rows of an INSERT take their values. So a
--     psql bulk of 20 rows stands at the queue's head beside a key's
--     backlog, not behind it, and a tenant that comes back after a pause
--     starts at the head, with no credit for its pause.

ALTER TABLE api_keys ADD COLUMN weight float8 NOT NULL DEFAULT 1
    CONSTRAINT api_keys_weight_in_range CHECK (weight >= 0.01 AND weight <= 1000);
COMMENT ON COLUMN api_keys.weight IS
    'the key''s share of evaluation time relative to the other keys with work waiting (rows without an owner weigh 1)';
GRANT SELECT (weight) ON api_keys TO calculator_api;
GRANT SELECT (id, weight) ON api_keys TO calculator_worker;

ALTER TABLE calculators ADD COLUMN tenant_usage jsonb NOT NULL DEFAULT '{}'::jsonb;
COMMENT ON COLUMN calculators.tenant_usage IS
    'per tenant (an api_keys id, or "none" for rows without an owner): [CPU seconds charged since the '
    'Calculator started, CPU seconds over the last minute, tasks running now]';

CREATE SEQUENCE tasks_unowned_round AS bigint MINVALUE 0 START WITH 1;
COMMENT ON SEQUENCE tasks_unowned_round IS
    'the fair rounds of rows without an owner (tasks.fair_round''s default), moved up to the queue''s head by tasks_place_unowned';
SELECT setval('tasks_unowned_round', greatest(1, queue_head()), false);
GRANT USAGE ON SEQUENCE tasks_unowned_round TO calculator_api;

-- Before the rows of an INSERT take their rounds: the rows without an owner
-- continue their tenant's rounds, but never before the queue's head (a
-- tenant whose rows all finished starts at the head, where the others'
-- next turns are). Concurrent INSERTs may give two rows the same round:
-- the id orders them.
CREATE FUNCTION place_unowned_rows() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    head bigint := queue_head();
    next_round bigint;
BEGIN
    SELECT CASE WHEN is_called THEN last_value + 1 ELSE last_value END INTO next_round FROM tasks_unowned_round;
    IF next_round < head THEN
        PERFORM setval('tasks_unowned_round', head, false);
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER tasks_place_unowned BEFORE INSERT ON tasks
    FOR EACH STATEMENT
    EXECUTE FUNCTION place_unowned_rows();

ALTER TABLE tasks ALTER COLUMN fair_round SET DEFAULT nextval('tasks_unowned_round');

-- A row inserted with an owner by anyone but the API (which computes its
-- rounds in its INSERT) takes its key's next round, unless psql set a round
-- of its own: the default just drawn for it (the rows without an owner's)
-- is not one. The owner must be a key that exists, as before.
CREATE OR REPLACE FUNCTION assign_fair_round() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (SELECT FROM api_keys WHERE id = NEW.owner) THEN
        RAISE EXCEPTION 'owner % is not an API key', NEW.owner
            USING ERRCODE = 'foreign_key_violation',
                  HINT = 'owner is an api_keys id: SELECT id, name FROM api_keys, or leave it NULL (nobody)';
    END IF;
    -- The default just drawn is the sequence's last value (unless another
    -- session drew one since: the row then keeps a round near the head). It
    -- is given back: the rounds of rows without an owner continue from
    -- where they were.
    IF TG_OP = 'INSERT' AND NEW.fair_round IS NOT NULL
            AND NEW.fair_round = (SELECT last_value FROM tasks_unowned_round) THEN
        PERFORM setval('tasks_unowned_round', greatest(NEW.fair_round - 1, 0));
        NEW.fair_round := NULL;
    END IF;
    IF TG_OP = 'INSERT' AND NEW.fair_round IS NULL THEN
        NEW.fair_round := next_fair_round(NEW.owner);
    END IF;
    RETURN NEW;
END;
$$;

DROP TRIGGER tasks_fair_round ON tasks;
CREATE TRIGGER tasks_fair_round BEFORE INSERT ON tasks
    FOR EACH ROW
    WHEN (NEW.owner IS NOT NULL AND current_user <> 'calculator_api')
    EXECUTE FUNCTION assign_fair_round();

-- TRUNCATE empties the queue: the rows without an owner start again at the
-- start with the low-water mark (sql/011).
CREATE OR REPLACE FUNCTION reset_counts_on_truncate() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
BEGIN
    DELETE FROM task_counts;
    UPDATE task_retention SET purged_through = 0;
    PERFORM setval('tasks_queue_head', 0);
    PERFORM setval('tasks_unowned_round', 1, false);
    RETURN NULL;
END;
$$;

-- Every INSERT now asks for the queue's head (tasks_place_unowned), which
-- moves the low-water mark up to the next id when nothing is pending: a
-- row psql inserts with a round of its own below that mark would stand
-- hidden before it (from the keys' next rounds, the listings and the
-- figures) until the minute's walk set it right. The mark moves back to
-- the earliest place an INSERT made, in the same statement trigger that
-- tells the Calculators of it.
CREATE FUNCTION lower_queue_head(place bigint) RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = public, pg_temp AS $$
BEGIN
    IF place < (SELECT last_value FROM tasks_queue_head) THEN
        PERFORM setval('tasks_queue_head', greatest(place, 0));
    END IF;
END;
$$;
REVOKE ALL ON FUNCTION lower_queue_head(bigint) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION lower_queue_head(bigint) TO calculator_api;

CREATE OR REPLACE FUNCTION notify_tasks_inserted() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    earliest bigint := (SELECT min(coalesce(r.fair_round, r.id)) FROM inserted_rows r);
    before text;
BEGIN
    IF earliest IS NULL THEN
        RETURN NULL;
    END IF;
    PERFORM lower_queue_head(earliest);
    IF current_setting('calculator.notify_after_commit', true) = 'on' THEN
        before := current_setting('calculator.first_place', true);
        IF coalesce(before, '') = '' OR earliest < before::bigint THEN
            PERFORM set_config('calculator.first_place', earliest::text, false);
        END IF;
        RETURN NULL;
    END IF;
    PERFORM pg_notify('tasks_inserted', earliest::text);
    RETURN NULL;
END;
$$;

-- A key's next round: one more than its newest pending round, or the
-- queue's head when it has nothing pending (sql/011) -- but never past the
-- next id. The rounds the database gives never pass the id of their row (a
-- key's rounds grow by one a task of its own, the ids by one a task of
-- anyone's, both from at most the next id), so only a round set by hand can:
-- one psql row of a key with a round far ahead (re-inserted from a dump,
-- say) put every later task of that key behind everyone's backlog (found
-- from outside).
CREATE OR REPLACE FUNCTION next_fair_round(for_owner bigint) RETURNS bigint
LANGUAGE plpgsql VOLATILE SET enable_sort = off AS $$
DECLARE
    head bigint := queue_head();
BEGIN
    RETURN least(
        coalesce(
            (SELECT t.fair_round + 1 FROM tasks t
             WHERE t.owner = for_owner AND t.status = 'pending' AND t.owner IS NOT NULL
               AND t.fair_round >= head
             ORDER BY t.fair_round DESC LIMIT 1),
            head),
        greatest(head, coalesce((SELECT t.id + 1 FROM tasks t ORDER BY t.id DESC LIMIT 1), 1)));
END;
$$;
