"""One bad row, one dead process, one lock: each harms nothing but itself.

Real Calculator processes against the real database; the rows are inserted
with SQL, as a psql user would, between valid rows in one statement."""

from __future__ import annotations

import os
import signal
import time

import psycopg

from tests.support import wait_done, wait_for

VALID = [("x + 1", '{"x": 1}', 2), ("6*7", "{}", 42), ("x * y", '{"x": 3, "y": 4}', 12)]


def insert_between_valid_rows(db, poison_rows) -> tuple[list[int], list[int]]:
    """One INSERT: valid, poison, valid, ..., poison, valid. A poison row is
    (expression, SQL for its variables, that SQL's parameters)."""
    values, params, kinds = [], [], []
    for n, poison in enumerate(list(poison_rows) + [None]):
        expression, variables, _ = VALID[n % len(VALID)]
        values.append("(%s, %s::jsonb)")
        params += [expression, variables]
        kinds.append("valid")
        if poison is not None:
            values.append(f"(%s, {poison[1]})")
            params += [poison[0], *poison[2]]
            kinds.append("poison")
    ids = [r[0] for r in db.execute(
        f"INSERT INTO tasks (expression, variables) VALUES {', '.join(values)} RETURNING id", params)]
    return ([i for i, k in zip(ids, kinds) if k == "valid"],
            [i for i, k in zip(ids, kinds) if k == "poison"])


def expected_valid(db, valid_ids):
    rows = db.execute("SELECT id, expression FROM tasks WHERE id = ANY(%s)", (valid_ids,))
    answers = {e: r for e, _, r in VALID}
    return {task_id: ("done", answers[expression], None) for task_id, expression in rows}


def test_poison_rows_become_their_own_errors_and_harm_no_batch_mate(db, calculators):
    calc = calculators(memory_limit_mb=100, task_num=100)
    db.execute("ALTER TABLE tasks DISABLE TRIGGER tasks_inserted_notify")
    poison = [
        # 5,001 digits: more than Python's json reads
        ("x", "jsonb_build_object('x', ('1' || repeat('0', 5000))::numeric)", []),
        # 900 deep: more than pickle sends
        ("x", "%s::jsonb", ['{"x": ' + "[" * 900 + "1" + "]" * 900 + "}"]),
        # 30 MB: a child capped at 100 MB could not even receive it
        ("1+" * 15_000_000 + "1", "'{}'", []),
        # 401 digits: unusual but fine
        ("x", "'{\"x\": 1e400}'", []),
        # a megabyte of variables: not even decoded
        ("x", "%s::jsonb", ['{"x": 1, "y": "' + "a" * 1_000_000 + '"}']),
    ]
    valid, bad = insert_between_valid_rows(db, poison)
    db.execute("ALTER TABLE tasks ENABLE TRIGGER tasks_inserted_notify")
    db.execute("NOTIFY tasks_inserted")  # one claim takes the whole batch
    results = wait_done(db, valid + bad, timeout=60)
    assert {i: results[i] for i in valid} == expected_valid(db, valid)
    digits, nested, huge, big, bulky = (results[i] for i in bad)
    assert digits == ("error", None, "variable 'x' is too large: more than 1000 digits")
    assert nested == ("error", None, "variable 'x' must be a number, not an array")
    assert huge == ("error", None, "expression is too long: 30000001 characters, the limit is 10000")
    assert big == ("done", 10**400, None)
    assert bulky == ("error", None, "'variables' is too large: more than 1000000 characters of JSON")
    assert db.execute("SELECT max(attempts) FROM tasks").fetchone()[0] == 1, "nobody was blamed"
    assert calc.process.poll() is None, calc.log()
    assert "refused ids=" in calc.log() and "evaluation process died" not in calc.log()


def test_a_child_that_dies_before_starting_gets_its_chunk_split_until_the_culprit_is_alone(db, calculators):
    """With the length cap lifted, a 30 MB expression reaches the children,
    whose 100 MB cap can hardly hold it: a child dies receiving it, before
    starting any task. The chunk goes again, then is halved until the culprit
    is alone; every batch-mate is calculated with its one attempt, and the
    culprit ends in an error of its own (given up after MAX_ATTEMPTS, or timed
    out when a child managed to receive it after all)."""
    calc = calculators(memory_limit_mb=100, max_expression_length=50_000_000, max_attempts=2,
                       num_processes=1, calculation_timeout=2, queue_wait_time=0.2)
    db.execute("ALTER TABLE tasks DISABLE TRIGGER tasks_inserted_notify")
    valid, bad = insert_between_valid_rows(db, [("1+" * 15_000_000 + "1", "'{}'", [])])
    more_valid, _ = insert_between_valid_rows(db, [])
    db.execute("ALTER TABLE tasks ENABLE TRIGGER tasks_inserted_notify")
    db.execute("NOTIFY tasks_inserted")
    results = wait_done(db, valid + more_valid + bad, timeout=90)
    valid += more_valid
    assert {i: results[i] for i in valid} == expected_valid(db, valid)
    assert results[bad[0]][0] == "error"
    attempts = dict(db.execute("SELECT id, attempts FROM tasks").fetchall())
    assert all(attempts[i] == 1 for i in valid), attempts
    log = calc.log()
    assert "before starting ids=" in log, log          # a child did die receiving the chunk
    # Then either the culprit was halved down until it was alone, or a child
    # managed to receive it on a later try and ran out of memory parsing it
    # (an error of its own: core/parsing never reports that as a parse error).
    assert (f"before starting ids={bad[0]}\n" in log
            or "out of memory" in (results[bad[0]][2] or "")
            or "timed out" in (results[bad[0]][2] or "")), (results[bad[0]], log)
    assert "Traceback" not in log
    assert calc.process.poll() is None, log


RUNAWAY = "9**(9**9)"
SLOW = "fac(300000) / fac(299999)"  # a second or two of honest work; result 300000.0


def test_a_row_locked_longer_than_the_lease_holds_up_nothing_else(db, database_url, calculators):
    """An operator's open transaction locks a task the Calculator is
    calculating, for longer than the lease. The Calculator keeps serving the
    rest, holds that one outcome back and stores it, on the same claim, when
    the lock goes. (Timeouts while a statement waits: the next test.)"""
    calc = calculators(lease_seconds=1.5, num_processes=2, queue_wait_time=60)
    held = insert_between_valid_rows(db, [])[0][0]  # warm up: the start-up poll is behind us
    wait_done(db, [held])
    slow = db.execute("INSERT INTO tasks (expression) VALUES (%s) RETURNING id", (SLOW,)).fetchone()[0]
    wait_for(lambda: db.execute("SELECT attempts FROM tasks WHERE id = %s", (slow,)).fetchone()[0] == 1)
    with psycopg.connect(database_url) as operator:  # not autocommit: the lock stays held
        operator.execute("SELECT * FROM tasks WHERE id = %s FOR UPDATE", (slow,))
        valid, _ = insert_between_valid_rows(db, [])
        results = wait_done(db, valid, timeout=30)
        assert results == expected_valid(db, valid)
        wait_for(lambda: "holding back results ids=%d" % slow in calc.log(), timeout=30,
                 message="the locked row's outcome to be held back")
        wait_for(lambda: db.execute("SELECT process_at < now() FROM tasks WHERE id = %s",
                                    (slow,)).fetchone()[0], message="the lease to run out")
        assert db.execute("SELECT status FROM tasks WHERE id = %s", (slow,)).fetchone()[0] == "pending"
    assert wait_done(db, [slow], timeout=30)[slow] == ("done", 300000.0, None)
    assert db.execute("SELECT attempts FROM tasks WHERE id = %s", (slow,)).fetchone()[0] == 1
    assert calc.process.poll() is None and "Traceback" not in calc.log()


def test_timeouts_are_kept_while_a_statement_waits_on_a_table_lock(db, database_url, calculators):
    """A migration's ACCESS EXCLUSIVE lock holds the Calculator's next
    statement (LOCK_TIMEOUT raised so that it waits long): the runaway is
    still ended at CALCULATION_TIMEOUT while the loop waits, by its own CPU
    timer (nothing in the Calculator has to run), and the loop stores the
    timeout when it is back. The lock is taken while the runaway is young,
    and the Calculator is seen waiting on it before the runaway dies and
    still after. (The wall-clock ceiling, which the guard thread keeps
    meanwhile: tests/test_cpu_timeout.py.)"""
    timeout = 4
    calc = calculators(calculation_timeout=timeout, num_processes=1, lock_timeout=60, statement_timeout=120,
                       queue_wait_time=0.2)
    runaway = db.execute("INSERT INTO tasks (expression) VALUES (%s) RETURNING id", (RUNAWAY,)).fetchone()[0]
    child = wait_for(calc.busy_evaluator_pids, message="the runaway to be calculated")[0]

    def calculator_waits_on_the_lock(conn) -> bool:
        return conn.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'calculator' "
                            "AND wait_event_type = 'Lock'").fetchone()[0] > 0

    with psycopg.connect(database_url) as migration, psycopg.connect(database_url, autocommit=True) as watcher:
        migration.execute("LOCK TABLE tasks IN ACCESS EXCLUSIVE MODE")
        wait_for(lambda: calculator_waits_on_the_lock(watcher), message="the Calculator to wait on the lock")
        assert _alive(child), "the runaway died before the loop blocked: this run cannot tell that the timeout is kept while the loop waits"
        wait_for(lambda: not _alive(child), timeout=timeout + 5,
                 message="the runaway's process to be killed while the loop waits")
        assert calculator_waits_on_the_lock(watcher), "the loop was still held when the runaway was killed"
    assert wait_done(db, [runaway], timeout=30)[runaway] == \
        ("error", None, f"calculation timed out after {timeout} s of CPU time")
    assert calc.process.poll() is None and "Traceback" not in calc.log()


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_a_refused_statement_is_survived_and_retried(db, database_url, calculators):
    """Not only a lost connection: a statement refused (here a privilege
    revoked by mistake) is logged once, retried with backoff, and the
    Calculator serves again when it is fixed."""
    calc = calculators(queue_wait_time=0.2)
    try:
        db.execute("REVOKE UPDATE ON tasks FROM calculator_worker")
        task_id = db.execute("INSERT INTO tasks (expression) VALUES ('2+2') RETURNING id").fetchone()[0]
        wait_for(lambda: "database statement failed (InsufficientPrivilege" in calc.log(),
                 message="the refusal to be logged")
        wait_for(lambda: calc.log().count("retrying with backoff") >= 1)
    finally:
        # the grants of sql/002 and sql/016 (result_negative_zero), as they were
        db.execute("GRANT UPDATE (status, process_at, attempts, lease_token, result, result_negative_zero, "
                   "error, finished_at) ON tasks TO calculator_worker")
    assert wait_done(db, [task_id], timeout=30)[task_id] == ("done", 4, None)
    log = calc.log()
    assert log.count("database statement failed") == 1, "logged once, not at every retry"
    assert "database statement works again" in log
    assert calc.process.poll() is None and "Traceback" not in log


def test_the_result_listener_survives_any_payload(db, api_url):
    """Any role, the API's included, may NOTIFY results_stored with anything:
    the listener goes on, and waiters are still woken by the next real one."""
    from api.result_waiter import CHANNEL, ResultWaiter
    waiter = ResultWaiter(api_url)
    try:
        event = waiter.register(5)
        wait_for(lambda: db.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = "
                                    "'calculator-api-waiter' AND query LIKE 'LISTEN%%'").fetchone()[0],
                 message="the listener to listen")
        event.clear()  # set once by the start-up wake-up
        with psycopg.connect(api_url, autocommit=True) as api_role:
            for payload in ("abc", "", "1,,2", "9" * 5000, "-", "\\x00"):
                api_role.execute("SELECT pg_notify(%s, %s)", (CHANNEL, payload))
            assert event.wait(5), "a bad payload wakes everyone rather than no one"
            event.clear()
            api_role.execute("SELECT pg_notify(%s, '4,5,6')", (CHANNEL,))
            assert event.wait(5), "the listener died on a bad payload"
        assert waiter._thread.is_alive()
    finally:
        waiter.close()


def test_the_calculators_sessions_are_bounded(worker_url):
    """statement_timeout, lock_timeout, idle_in_transaction_session_timeout
    on its session, and TCP keepalives that libpq accepts (over TCP here)."""
    from psycopg.conninfo import conninfo_to_dict, make_conninfo
    from core.settings import CalculatorSettings
    from worker.calculator import Calculator
    tcp_url = make_conninfo(worker_url, host="127.0.0.1")
    assert conninfo_to_dict(tcp_url)["host"] == "127.0.0.1"
    settings = CalculatorSettings.from_env({"STATEMENT_TIMEOUT": "7", "LOCK_TIMEOUT": "0.5",
                                            "IDLE_IN_TRANSACTION_TIMEOUT": "30", "TCP_KEEPALIVE": "9"})
    calculator = Calculator(settings, tcp_url)
    calculator._connect()
    try:
        conn = calculator.work_conn
        shown = [conn.execute(f"SHOW {name}").fetchone()[0] for name in
                 ("statement_timeout", "lock_timeout", "idle_in_transaction_session_timeout",
                  "tcp_keepalives_idle", "tcp_keepalives_interval", "tcp_keepalives_count",
                  "tcp_user_timeout")]
        assert shown == ["7s", "500ms", "30s", "9", "3", "3", "18000"]
        client = calculator.listen_conn.info.get_parameters()
        assert (client["keepalives_idle"], client["keepalives_count"]) == ("9", "3")
    finally:
        calculator._disconnect()


def test_a_child_killed_while_its_calculator_was_frozen_is_a_crash_not_a_timeout(db, calculators):
    """Found by the chaos run: a child killed by someone else early in its
    task, noticed by its Calculator only after CALCULATION_TIMEOUT had passed
    (the Calculator was frozen), is a dead process (the task is calculated
    again), not a timeout."""
    calc = calculators(calculation_timeout=4, num_processes=1)
    medium = "fac(100000) / fac(99999)"  # a few tenths of a second: far from the timeout
    task_id = db.execute("INSERT INTO tasks (expression) VALUES (%s) RETURNING id", (medium,)).fetchone()[0]
    child = wait_for(calc.busy_evaluator_pids, message="the task to be calculated")[0]
    os.kill(calc.pid, signal.SIGSTOP)
    try:
        os.kill(child, signal.SIGKILL)
        time.sleep(4 + 0.5)  # the passing of time is the point: past the timeout, frozen
    finally:
        os.kill(calc.pid, signal.SIGCONT)
    assert wait_done(db, [task_id], timeout=60)[task_id] == ("done", 100000.0, None)
    assert db.execute("SELECT attempts FROM tasks").fetchone()[0] == 2
    assert "evaluation process died" in calc.log()


def test_a_read_only_server_is_survived_by_reconnecting(db, calculators):
    """As after a failover to a server that is (still) read-only: every
    write fails with ReadOnlySqlTransaction. The Calculator reconnects with
    backoff instead of exiting or retrying on the same session, and serves
    again once the server takes writes."""
    calc = calculators(queue_wait_time=0.2)
    database = db.info.dbname
    try:
        db.execute(f'ALTER DATABASE "{database}" SET default_transaction_read_only = on')
        db.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                   "WHERE datname = current_database() AND application_name LIKE 'calculator%%'")
        task_id = db.execute("INSERT INTO tasks (expression) VALUES ('2+3') RETURNING id").fetchone()[0]
        sessions: set[int] = set()

        def reconnected_a_few_times():
            sessions.update(r[0] for r in db.execute(
                "SELECT pid FROM pg_stat_activity WHERE application_name = 'calculator'"))
            return len(sessions) >= 3 and "read-only transaction" in calc.log()
        wait_for(reconnected_a_few_times, timeout=30, interval=0.02,
                 message="a few reconnections to the read-only server")
        assert calc.process.poll() is None, calc.log()
    finally:
        db.execute(f'ALTER DATABASE "{database}" RESET default_transaction_read_only')
    assert wait_done(db, [task_id], timeout=30)[task_id] == ("done", 5, None)
    log = calc.log()
    assert log.count("read-only") == 1, "one outage, logged once, however many reconnections"
    assert calc.process.poll() is None and "Traceback" not in log


def test_the_loop_does_not_spin_while_its_children_hold_a_full_batch(db, calculators):
    """Holding more than half a batch, the Calculator claims nothing more: a
    poll that is due must not wake its loop again and again meanwhile."""
    calc = calculators(task_num=4, num_processes=1, queue_wait_time=0.2, calculation_timeout=30)
    db.execute("INSERT INTO tasks (expression) SELECT %s FROM generate_series(1, 3)", (SLOW,))
    wait_for(calc.busy_evaluator_pids, message="the batch to be calculated")
    before = _cpu_seconds(calc.pid)
    time.sleep(2)  # the point: 2 s of waiting for children should cost the parent nothing
    assert _cpu_seconds(calc.pid) - before < 0.5, "the loop spins while its children work"


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
