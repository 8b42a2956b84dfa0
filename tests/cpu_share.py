"""CPU time and CPU contention, for the tests and the benchmark of
CALCULATION_TIMEOUT (tests/test_cpu_timeout.py, bench/cpu_timeout.py):
a process's CPU time, a process pinned to one CPU beside busy loops, and
an expression calibrated to need a given CPU time on this machine."""

from __future__ import annotations

import contextlib
import os
import resource
import subprocess
import sys
import time
import uuid
from multiprocessing.connection import wait

from core.settings import ExpressionLimits
from tests.support import wait_for
from worker.evaluation import calculate
from worker.evaluators import EvaluatorPool
from worker.task_queue import Task


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


class Driver:
    """Drives a pool as the Calculator's loop does (select on the pipes,
    collect, enforce the wall-clock ceiling, dispatch). dead_cpu: the CPU
    time of the processes reaped while it waited for an outcome (the whole
    life of a child ended by its task: the pool reaps it before replacing
    it), exact, unlike a sample taken while it runs."""

    def __init__(self, pool: EvaluatorPool):
        self.pool = pool
        self.outcomes = []
        self.dead_cpu = 0.0

    def start(self, expression: str, task_id: int) -> tuple[int, float]:
        """Send one task; (the pid of its process, when it started)."""
        self._reaped_before = reaped_cpu_seconds()
        self.pool.submit([task(task_id, expression)])
        self.pool.dispatch()
        evaluator = self.pool.evaluators[0]
        running = wait_for(evaluator.running, message="the task to start")
        return evaluator.process.pid, running[1]

    def step(self):
        ready = wait(self.pool.connections(), timeout=0.005)
        self.outcomes.extend(self.pool.collect(ready))
        self.outcomes.extend(self.pool.enforce_timeouts(time.monotonic()))
        self.outcomes.extend(self.pool.finished)
        self.pool.finished.clear()
        self.pool.dispatch()
        return self.outcomes

    def outcome(self, timeout: float):
        """(the one outcome, when it came); call it before reaping anything else."""
        outcomes = wait_for(self.step, timeout=timeout, interval=0, message="the outcome")
        ended = time.monotonic()
        self.dead_cpu = reaped_cpu_seconds() - self._reaped_before
        assert len(outcomes) == 1, outcomes
        self.outcomes = []
        return outcomes[0], ended


def reaped_cpu_seconds() -> float:
    """CPU time of this process's children that were waited for, so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def task(task_id: int, expression: str) -> Task:
    return Task(task_id, expression, {}, uuid.uuid4())
