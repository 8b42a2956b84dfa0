-- At most MAX_RUNNING_PER_KEY of one key's tasks evaluating at once, across
-- every Calculator (worker/running_cap.py).
--
-- A key has that many running slots; a Calculator starts a task of the key
-- only holding one of them, for as long as its evaluation process is on the
-- key's tasks. A slot is a session-level advisory lock, (the key's id, -1 -
-- the slot's number) in the two-integer space (sql/010's per-key lock has a
-- fixed first integer and a second one >= 0: they never meet): the lock
-- manager hands each one to one session at a time, nothing is written (no
-- row to bloat beside a held snapshot), and a Calculator's slots are free
-- again the moment its session ends, whatever killed it.

-- Take up to wanted of the key's free slots (those below max_running that
-- this session does not hold already: held); returns the slots taken.
CREATE FUNCTION take_running_slots(for_owner bigint, max_running integer, wanted integer, held integer[])
RETURNS integer[]
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    taken integer[] := '{}';
BEGIN
    FOR slot IN 0 .. max_running - 1 LOOP
        EXIT WHEN cardinality(taken) >= wanted;
        CONTINUE WHEN slot = ANY(held);
        IF pg_try_advisory_lock((for_owner % 2147483647)::integer, -1 - slot) THEN
            taken := taken || slot;
        END IF;
    END LOOP;
    RETURN taken;
END;
$$;

-- Give slots back.
CREATE FUNCTION release_running_slots(for_owner bigint, slots integer[]) RETURNS void
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    slot integer;
BEGIN
    FOREACH slot IN ARRAY slots LOOP
        PERFORM pg_advisory_unlock((for_owner % 2147483647)::integer, -1 - slot);
    END LOOP;
END;
$$;

REVOKE ALL ON FUNCTION take_running_slots(bigint, integer, integer, integer[]) FROM PUBLIC;
REVOKE ALL ON FUNCTION release_running_slots(bigint, integer[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION take_running_slots(bigint, integer, integer, integer[]),
                          release_running_slots(bigint, integer[]) TO calculator_worker;
