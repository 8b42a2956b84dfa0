"""CALCULATION_TIMEOUT counts the evaluation process's CPU time, and a
wall-clock ceiling (CALCULATION_WALL_TIMEOUT) ends a process that does not
get to use any (docs/design.md, "Timeouts").

Contention is made real, not simulated: the evaluation process is pinned to
one CPU together with busy-looping competitors (the scheduler then gives each
an equal share of it), or, for the Calculators, there are twice as many
evaluation processes as cores, half of them on runaways. The honest tasks'
CPU need is measured at the start (an expression calibrated on this machine),
so that the tests hold on a fast machine and a slow one."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from multiprocessing.connection import wait

import psycopg
import pytest

from core.settings import CalculatorSettings, ExpressionLimits
from tests.support import wait_done, wait_for
from worker.evaluation import calculate
from worker.evaluators import EvaluatorPool
from worker.task_queue import Task

RUNAWAY = "9**(9**9)"


# --- helpers ----------------------------------------------------------------

def cpu_seconds(pid: int) -> float | None:
    """CPU time of a process so far (the scheduler's, in ns), None once it is gone."""
    try:
        with open(f"/proc/{pid}/schedstat") as schedstat:
            return int(schedstat.read().split()[0]) / 1e9
    except (FileNotFoundError, ProcessLookupError):
        return None


def _cpu_of(expression: str) -> float:
    started = time.process_time()
    calculate(expression, {}, ExpressionLimits())
    return time.process_time() - started


def calibrated(seconds: float) -> tuple[str, float, float]:
    """An expression needing about `seconds` of CPU time here: (expression,
    its result, its CPU need: the most of three measurements). fac(n) /
    fac(n-1) is n, at a cost that grows like n**1.8 or so. The same work
    takes more CPU time while other processes share the caches and memory
    bandwidth (up to a third more, measured on a loaded 2-core machine):
    hence three measurements, and bounds that allow for it."""
    n = 20_000
    for _ in range(8):
        took = _cpu_of(f"fac({n}) / fac({n - 1})")
        if abs(took - seconds) < 0.1 * seconds:
            break
        n = max(1000, int(n * (seconds / max(took, 0.001)) ** (1 / 1.8)))
    expression = f"fac({n}) / fac({n - 1})"
    samples = sorted([took, _cpu_of(expression), _cpu_of(expression)])
    assert 0.7 * seconds <= samples[1] <= 1.4 * seconds, f"calibration: {expression} needs {samples} s"
    return expression, float(n), samples[-1]


@contextlib.contextmanager
def sharing_one_cpu(pid: int, competitors: int):
    """Pin pid to one CPU with `competitors` busy loops: it gets at most
    1 / (competitors + 1) of that CPU."""
    cpu = min(os.sched_getaffinity(0))
    loops = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(competitors)]
    try:
        for loop in loops:
            os.sched_setaffinity(loop.pid, {cpu})
        os.sched_setaffinity(pid, {cpu})
        yield
    finally:
        for loop in loops:
            loop.kill()
            loop.wait()


def task(task_id: int, expression: str) -> Task:
    return Task(task_id, expression, {}, uuid.uuid4())


@pytest.fixture
def make_pool():
    """make_pool(timeout, wall) starts a pool of one evaluation process."""
    started = []

    def make(timeout: float, wall: float = 0.0) -> EvaluatorPool:
        pool = EvaluatorPool(CalculatorSettings(num_processes=1, calculation_timeout=timeout,
                                                calculation_wall_timeout=wall))
        pool.start()
        started.append(pool)
        return pool
    yield make
    for pool in started:
        pool.stop()


class Driver:
    """Drives a pool as the Calculator's loop does (select on the pipes,
    collect, enforce the wall-clock ceiling), and samples the CPU time of
    the child of interest meanwhile."""

    def __init__(self, pool: EvaluatorPool):
        self.pool = pool
        self.outcomes = []
        self.watched: int | None = None
        self.last_cpu = 0.0

    def start(self, expression: str, task_id: int) -> tuple[int, float]:
        self.pool.submit([task(task_id, expression)])
        self.pool.dispatch()
        evaluator = self.pool.evaluators[0]
        running = wait_for(evaluator.running, message="the task to start")
        self.watched = evaluator.process.pid
        return evaluator.process.pid, running[1]

    def step(self):
        if self.watched is not None:
            cpu = cpu_seconds(self.watched)
            if cpu is not None:
                self.last_cpu = cpu
        ready = wait(self.pool.connections(), timeout=0.005)
        self.outcomes.extend(self.pool.collect(ready))
        self.outcomes.extend(self.pool.enforce_timeouts(time.monotonic()))
        self.outcomes.extend(self.pool.finished)
        self.pool.finished.clear()
        self.pool.dispatch()
        return self.outcomes

    def outcome(self, timeout: float):
        outcomes = wait_for(self.step, timeout=timeout, interval=0, message="the outcome")
        assert len(outcomes) == 1, outcomes
        self.outcomes = []
        return outcomes[0], time.monotonic()


# --- one evaluation process, driven here --------------------------------------

def test_a_runaway_is_ended_after_its_cpu_timeout_however_little_cpu_it_gets(make_pool):
    """A third of a CPU: the runaway runs about 3 s of wall-clock time and is
    ended when it has used 1 s of CPU time, not before."""
    pool = make_pool(timeout=1, wall=30)
    driver = Driver(pool)
    pid, started_at = driver.start(RUNAWAY, 1)
    with sharing_one_cpu(pid, competitors=2):
        outcome, ended_at = driver.outcome(timeout=30)
    assert outcome.error == "calculation timed out after 1 s of CPU time"
    assert 0.9 <= driver.last_cpu <= 1 + 0.1, f"ended after {driver.last_cpu:.3f} s of CPU time"
    assert ended_at - started_at >= 1.5, "it had a third of a CPU: the wall clock ran faster"
    assert pool.crashed == []


def test_an_honest_task_slowed_by_its_neighbours_past_the_timeout_is_answered(make_pool):
    """Needing about 0.6 s of CPU at a 1 s timeout, with a quarter of a CPU:
    some 2.4 s of wall-clock time, past the timeout, and answered all the same."""
    expression, result, need = calibrated(0.6)
    pool = make_pool(timeout=1, wall=30)
    driver = Driver(pool)
    pid, started_at = driver.start(expression, 2)
    with sharing_one_cpu(pid, competitors=3):
        outcome, ended_at = driver.outcome(timeout=30)
    assert (outcome.result, outcome.error) == (repr(result), None), f"needs {need:.2f} s of CPU"
    assert ended_at - started_at > 1.2, "the wall clock alone would have timed it out"


def test_a_process_that_uses_no_cpu_is_ended_by_the_wall_clock_ceiling(make_pool):
    """A stopped process uses no CPU time: its CPU timer never runs out. The
    ceiling ends it, its task gets the wall-clock timeout, and the process
    that replaces it calculates."""
    pool = make_pool(timeout=1, wall=2)
    driver = Driver(pool)
    pid, started_at = driver.start(RUNAWAY, 3)
    os.kill(pid, signal.SIGSTOP)
    outcome, ended_at = driver.outcome(timeout=30)
    assert outcome.error == "calculation timed out after 2 s of wall-clock time"
    assert ended_at - started_at >= 2
    assert driver.last_cpu < 1, "stopped before its CPU timeout"
    assert pool.evaluators[0].process.pid != pid
    driver.watched = None
    pool.submit([task(4, "6*7")])
    outcome, _ = driver.outcome(timeout=30)
    assert (outcome.result, outcome.error) == ("42", None)


# --- real Calculators on the real database --------------------------------------

@pytest.fixture
def owners(db):
    """API keys 1 and 2 (a task's owner is a key's id)."""
    db.execute("INSERT INTO api_keys (name, secret_sha256) "
               "SELECT 'key' || g, sha256(g::text::bytea) FROM generate_series(1, 2) g")


def insert_owned(db, owner: int, expressions: list[str]) -> list[int]:
    rows = db.execute("INSERT INTO tasks (expression, owner) SELECT e, %s FROM unnest(%s::text[]) "
                      "WITH ORDINALITY AS x(e, n) ORDER BY n RETURNING id", (owner, expressions))
    return sorted(r[0] for r in rows)


def test_runaways_of_one_key_do_not_time_out_another_keys_honest_tasks(db, calculators, owners):
    """Twice as many evaluation processes as cores (NUM_PROCESSES x
    Calculators), all on key A's runaways when key B's tasks come, each
    needing about 1.1 s of CPU at CALCULATION_TIMEOUT = 2: with half a core
    each (or less, on a busy machine), they take 2.2 s or more of wall-clock
    time, and every one is answered. The wall-clock ceiling is raised out of
    the way: the machine's other load is not this test's to control."""
    cores = len(os.sched_getaffinity(0))
    expression, result, need = calibrated(1.1)
    started = [calculators(calculation_timeout=2, calculation_wall_timeout=60, num_processes=cores)
               for _ in range(2)]
    runaways = insert_owned(db, 1, [RUNAWAY] * 200)
    wait_for(lambda: all(len(c.busy_evaluator_pids()) == cores for c in started), timeout=30,
             message="every evaluation process to run one of A's runaways")
    honest = insert_owned(db, 2, [expression] * (2 * cores))
    try:
        results = wait_done(db, honest, timeout=120)
        assert all(results[i] == ("done", result, None) for i in honest), (need, results)
        timed_out = db.execute("SELECT count(*), min(error), max(error) FROM tasks WHERE id = ANY(%s) "
                               "AND status = 'error'", (runaways,)).fetchone()
        assert timed_out[0] >= 2 * cores, "A's runaways kept running beside B's tasks"
        assert timed_out[1] == timed_out[2] == "calculation timed out after 2 s of CPU time"
    finally:
        db.execute("SELECT cancel_tasks(array_agg(id)) FROM tasks WHERE owner = 1 AND status = 'pending'")
    wait_for(lambda: not db.execute("SELECT count(*) FROM tasks WHERE status = 'pending'").fetchone()[0],
             timeout=30, message="A's cancelled runaways to leave the Calculators")


def test_the_wall_clock_ceiling_is_kept_while_a_statement_waits_on_a_table_lock(db, database_url,
                                                                                calculators):
    """A stopped evaluation process, and the Calculator's loop held up by a
    migration's table lock: the guard thread ends the process at the
    ceiling, and the loop stores the wall-clock timeout when it is back."""
    calc = calculators(calculation_timeout=2, calculation_wall_timeout=4, num_processes=1,
                       lock_timeout=60, statement_timeout=120, queue_wait_time=0.2)
    task_id = db.execute("INSERT INTO tasks (expression) VALUES (%s) RETURNING id", (RUNAWAY,)).fetchone()[0]
    child = wait_for(calc.busy_evaluator_pids, message="the runaway to be calculated")[0]
    os.kill(child, signal.SIGSTOP)
    stopped_at = time.monotonic()
    wait_for(lambda: _state(child) == "T", message="the evaluation process to stop")
    assert cpu_seconds(child) < 2, "stopped before its CPU timeout"
    with psycopg.connect(database_url) as migration:
        migration.execute("LOCK TABLE tasks IN ACCESS EXCLUSIVE MODE")
        wait_for(lambda: migration.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'calculator' "
            "AND wait_event_type = 'Lock'").fetchone()[0], message="the Calculator to wait on the lock")
        assert _alive(child) and time.monotonic() - stopped_at < 3, \
            "the loop was held up before the ceiling: the guard thread's to keep"
        wait_for(lambda: not _alive(child), timeout=4 + 5,
                 message="the stopped process to be killed while the loop waits")
    assert wait_done(db, [task_id], timeout=30)[task_id] == \
        ("error", None, "calculation timed out after 4 s of wall-clock time")
    assert calc.process.poll() is None and "Traceback" not in calc.log()


def _state(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return "gone"


def _alive(pid: int) -> bool:
    return _state(pid) not in ("Z", "gone")
