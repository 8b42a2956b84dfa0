"""Real Calculator processes against the real database."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from tests.support import insert, outcome, wait_done, wait_for

RUNAWAY = "9**(9**9)"
SLOW = "fac(300000) / fac(299999)"  # a second or two of honest work; result 300000.0


def test_psql_insert_is_calculated(db, calculators):
    calculators()
    task_id = insert(db, "x*t**y", '{"x": 10, "y": 1, "t": 11}')
    assert wait_done(db, [task_id])[task_id] == ("done", 110, None)


@pytest.mark.parametrize("expression, variables, expected", [
    ("1/0", "{}", ("error", None, "division by zero")),
    ("sqrt(-1)", "{}", ("error", None, "math domain error in sqrt")),
    ("exp(1000)", "{}", ("error", None, "overflow in exp")),
    ("2**20000", "{}", ("error", None, "result too large: more than 4300 digits")),
    ("fac(30)", "{}", ("done", 265252859812191058636308480000000, None)),
    ("x > 1", '{"x": 2}', ("done", True, None)),
    ("x / 4", '{"x": 2}', ("done", 0.5, None)),
    ("2 +", "{}", ("error", None, "parse error at column 4: the expression is incomplete")),
    ("'a' || 'b'", "{}", ("error", None, "parse error at column 1: unknown character")),
    ("1+2*-3", "{}", ("done", -5, None)),
    ("x + 1", '{"x": 1e400}', ("done", 10**400 + 1, None)),       # jsonb: an exact integer
    ("x", '{"x": 1e-400}', ("error", None, "variable 'x' is too small: it would be 0")),
    ("x", '{"x": ' + "1" * 5001 + "}", ("error", None, "variable 'x' is too large")),
    ("x * 2", '{"x": 2.50}', ("done", 5.0, None)),
    ("x", "{}", ("error", None, "missing values for x")),
    ("x", '{"x": "1"}', ("error", None, "variable 'x' must be a number, not a string")),
    ("1", "[1, 2]", ("error", None, "'variables' must be an object, not an array")),
])
def test_outcomes_of_psql_inserted_tasks(db, calculators, expression, variables, expected):
    """psql bypasses the API, so the Calculator applies the same rules."""
    calculators()
    task_id = insert(db, expression, variables)
    status, result, error = wait_done(db, [task_id])[task_id]
    assert (status, result) == expected[:2]
    assert (error or "").startswith(expected[2] or "")


def test_an_idle_calculator_is_woken_by_notify(db, calculators):
    calculators(queue_wait_time=60)
    wait_done(db, [insert(db, "1")])  # the start-up poll is behind us now
    started = time.monotonic()
    task_id = insert(db, "2+2")
    wait_done(db, [task_id], timeout=30)
    assert time.monotonic() - started < 10, "woken by the poll, not the notification"


def test_without_notifications_the_fallback_poll_finds_the_task(db, calculators):
    calculators(queue_wait_time=1)
    wait_done(db, [insert(db, "1")])
    db.execute("ALTER TABLE tasks DISABLE TRIGGER tasks_inserted_notify")
    task_id = insert(db, "2+2")
    assert wait_done(db, [task_id], timeout=15)[task_id] == ("done", 4, None)


def test_two_calculators_never_take_the_same_task(db, calculators):
    first, second = calculators(task_num=10), calculators(task_num=10)
    db.execute("INSERT INTO tasks (expression) SELECT g || '*2' FROM generate_series(1, 2000) g")
    ids = [r[0] for r in db.execute("SELECT id FROM tasks")]
    results = wait_done(db, ids, timeout=60)
    assert all(results[i] == ("done", 2 * i, None) for i in ids)
    assert db.execute("SELECT max(attempts), min(attempts) FROM tasks").fetchone() == (1, 1)
    # Both took part, and no id appears in both of their claim logs.
    claimed = [_claimed_ids(calc.log()) for calc in (first, second)]
    assert claimed[0] and claimed[1] and not claimed[0] & claimed[1]


def _claimed_ids(log: str) -> set[int]:
    ids = set()
    for line in log.splitlines():
        if " claimed ids=" in line:
            for part in line.split("claimed ids=")[1].split(","):
                low, _, high = part.partition("-")
                ids.update(range(int(low), int(high or low) + 1))
    return ids


def test_a_runaway_is_killed_at_the_timeout_and_the_calculator_goes_on(db, calculators):
    calc = calculators(calculation_timeout=1, num_processes=1)
    before = set(calc.evaluator_pids())
    runaways = [insert(db, RUNAWAY), insert(db, "fac(10**7)")]
    quick = insert(db, "1+1")
    results = wait_done(db, runaways + [quick], timeout=30)
    for task_id in runaways:
        assert results[task_id] == ("error", None, "calculation timed out after 1 s")
    assert results[quick] == ("done", 2, None)
    # Killed by the timeout rule (its log line), not found some other way;
    # how soon after the timeout is a figure for the benchmarks, not a
    # wall-clock bound that a loaded machine would break.
    for task_id in runaways:
        assert f"calculation timed out task={task_id} after=1s" in calc.log()
    assert calc.process.poll() is None
    assert not before & set(calc.evaluator_pids()), "the runaway's process was replaced"


def test_one_runaway_does_not_hold_back_the_quick_tasks_claimed_with_it(db, calculators):
    calculators(calculation_timeout=20, num_processes=2, task_num=100)
    db.execute("ALTER TABLE tasks DISABLE TRIGGER tasks_inserted_notify")
    db.execute("INSERT INTO tasks (expression) VALUES (%s)", (RUNAWAY,))
    db.execute("INSERT INTO tasks (expression) SELECT g || '+1' FROM generate_series(1, 50) g")
    db.execute("ALTER TABLE tasks ENABLE TRIGGER tasks_inserted_notify")
    insert(db, "0")  # one notification: the whole batch is claimed together
    quick = [r[0] for r in db.execute("SELECT id FROM tasks WHERE expression <> %s", (RUNAWAY,))]
    wait_done(db, quick, timeout=15)
    assert outcome(db, 1)[0] == "pending", "the quick ones finished long before the runaway's timeout"
    assert db.execute("SELECT count(*) FROM tasks WHERE status = 'done'").fetchone()[0] == 51


def test_memory_bombs_hit_the_cap_not_the_machine(db, calculators):
    calculators(memory_limit_mb=256)
    bomb = insert(db, "2**(2**34)")  # two gigabytes of digits
    after = insert(db, "3*3")
    results = wait_done(db, [bomb, after], timeout=30)
    assert results[bomb] == ("error", None, "out of memory: the calculation needs too much memory")
    assert results[after] == ("done", 9, None)


def test_a_killed_evaluation_process_costs_one_attempt_not_the_task(db, calculators):
    calc = calculators(num_processes=1)
    task_id = insert(db, SLOW)
    wait_for(lambda: db.execute("SELECT attempts FROM tasks").fetchone()[0] == 1)
    victim = wait_for(calc.busy_evaluator_pids, message="the task to be calculated")[0]
    os.kill(victim, signal.SIGKILL)
    assert wait_done(db, [task_id], timeout=60)[task_id] == ("done", 300000.0, None)
    assert db.execute("SELECT attempts FROM tasks").fetchone()[0] == 2
    assert "evaluation process died" in calc.log()


def test_a_dead_calculators_task_is_taken_again_after_its_lease(db, calculators):
    first = calculators(lease_seconds=1, calculation_timeout=120)
    task_id = insert(db, RUNAWAY)
    wait_for(lambda: "claimed ids=" in first.log())
    orphans = first.evaluator_pids()
    first.kill()
    # Its evaluation processes die with it instead of burning a core.
    wait_for(lambda: not any(Path(f"/proc/{pid}").exists() and
                             "State:\tZ" not in Path(f"/proc/{pid}/status").read_text()
                             for pid in orphans), message="orphaned evaluators to die")
    second = calculators(lease_seconds=1, calculation_timeout=1)
    assert wait_done(db, [task_id], timeout=30)[task_id] == \
        ("error", None, "calculation timed out after 1 s")
    assert db.execute("SELECT attempts FROM tasks").fetchone()[0] == 2
    assert f"claimed ids={task_id}" in second.log()


def test_a_late_calculators_result_is_discarded(db, calculators):
    late = calculators(lease_seconds=1, num_processes=1)
    task_id = insert(db, SLOW)
    wait_for(lambda: "claimed ids=" in late.log())
    os.kill(late.pid, signal.SIGSTOP)  # frozen: it cannot extend its lease
    try:
        wait_for(lambda: db.execute("SELECT process_at < now() FROM tasks WHERE id = %s",
                                    (task_id,)).fetchone()[0], message="the lease to expire")
        calculators(lease_seconds=30)
        wait_done(db, [task_id], timeout=60)
    finally:
        os.kill(late.pid, signal.SIGCONT)
    wait_for(lambda: "discarded stale results" in late.log(), timeout=60,
             message="the late Calculator to try to store")
    assert outcome(db, task_id) == ("done", 300000.0, None)
    assert db.execute("SELECT attempts FROM tasks").fetchone()[0] == 2


def test_sigterm_hands_back_what_is_held_and_exits_cleanly(db, calculators):
    calc = calculators(calculation_timeout=2, num_processes=1, task_num=10)
    db.execute("ALTER TABLE tasks DISABLE TRIGGER tasks_inserted_notify")
    db.execute("INSERT INTO tasks (expression) VALUES (%s), ('1'), ('2'), ('3')", (RUNAWAY,))
    db.execute("ALTER TABLE tasks ENABLE TRIGGER tasks_inserted_notify")
    insert(db, "4")
    wait_for(lambda: db.execute("SELECT count(*) FROM tasks WHERE attempts = 1").fetchone()[0] >= 4)
    assert calc.stop(signal.SIGTERM, timeout=30) == 0, "a clean exit (what it held: below)"
    # Nothing is left leased: each task is finished, or was handed back
    # claimable at once with its claim not counted as an attempt.
    rows = db.execute("SELECT id, status, attempts, process_at <= now(), error FROM tasks").fetchall()
    assert len(rows) == 5
    for task_id, status, attempts, claimable, error in rows:
        if status == "pending":
            assert attempts == 0 and claimable, f"task {task_id} was not handed back"
        elif task_id == 1:
            assert error == "calculation timed out after 2 s"
        else:
            assert status == "done"


def test_a_task_that_kills_every_process_that_tries_it_is_given_up(db, calculators):
    calc = calculators(num_processes=1, max_attempts=3, queue_wait_time=60)
    task_id = insert(db, SLOW)
    for attempt in (1, 2, 3):
        wait_for(lambda: db.execute("SELECT attempts FROM tasks").fetchone()[0] == attempt,
                 timeout=30, message=f"attempt {attempt}")
        victim = wait_for(calc.busy_evaluator_pids, message="the task to be calculated")[0]
        os.kill(victim, signal.SIGKILL)
    status, result, error = wait_done(db, [task_id], timeout=30)[task_id]
    assert status == "error"
    assert error == ("gave up after 3 attempts: each claim ended without an outcome "
                     "(the evaluation process, or the Calculator, died)")
    assert calc.process.poll() is None


@pytest.mark.parametrize("expression", [
    "fac(" * 1999 + "9" + ")" * 1999,       # factorials of factorials, at the length cap
    "9^" * 4999 + "9",                       # a tower of powers
])
def test_runaways_at_the_length_cap_are_stopped_within_the_timeout(db, calculators, expression):
    assert len(expression) <= 10_000
    calc = calculators(calculation_timeout=1)
    task_id = insert(db, expression)
    quick = insert(db, "6*7")
    results = wait_done(db, [task_id, quick], timeout=30)
    assert results[task_id] == ("error", None, "calculation timed out after 1 s")
    assert results[quick] == ("done", 42, None)
    assert f"calculation timed out task={task_id} after=1s" in calc.log(), "stopped by the timeout rule"


def test_deep_nesting_at_the_length_cap_is_just_calculated(db, calculators):
    calculators()
    task_id = insert(db, "(" * 4999 + "1" + ")" * 4999)
    assert wait_done(db, [task_id])[task_id] == ("done", 1, None)


def test_a_calculation_longer_than_the_lease_keeps_its_claim(db, calculators):
    """The lease is extended while the task is held: a second Calculator
    polling all along never takes it over, and it is claimed once."""
    first = calculators(lease_seconds=1.5, num_processes=1, calculation_timeout=60)
    task_id = insert(db, "fac(500000) / fac(499999)")  # seconds of CPU, more than the lease
    wait_for(lambda: f"claimed ids={task_id}" in first.log())
    second = calculators(lease_seconds=1.5, queue_wait_time=0.2)
    assert wait_done(db, [task_id], timeout=90)[task_id] == ("done", 500000.0, None)
    assert db.execute("SELECT attempts FROM tasks").fetchone()[0] == 1
    assert f"claimed ids={task_id}" not in second.log()


def test_a_late_result_is_fenced_off_while_the_new_claim_is_still_calculating(db, calculators):
    """The lease token, not the status, decides: the late Calculator wakes up
    with its result while the Calculator that took over is still calculating;
    the late result is discarded and the new claim's result stored."""
    late = calculators(lease_seconds=1, num_processes=1)
    task_id = insert(db, SLOW)
    wait_for(lambda: "claimed ids=" in late.log())
    os.kill(late.pid, signal.SIGSTOP)  # its child goes on and finishes; it cannot store
    try:
        wait_for(lambda: db.execute("SELECT process_at < now() FROM tasks").fetchone()[0],
                 message="the lease to expire")
        second = calculators(lease_seconds=30, num_processes=1)
        wait_for(lambda: db.execute("SELECT attempts FROM tasks").fetchone()[0] == 2,
                 message="the takeover")
    finally:
        os.kill(late.pid, signal.SIGCONT)  # the takeover needs a second or two more
    wait_for(lambda: "discarded stale results" in late.log() or "stored ids=" in late.log(),
             timeout=30, message="the late Calculator to try to store")
    assert f"discarded stale results ids={task_id}" in late.log()
    assert wait_done(db, [task_id], timeout=60)[task_id] == ("done", 300000.0, None)
    wait_for(lambda: f"stored ids={task_id}" in second.log(), message="the new claim's result stored")
