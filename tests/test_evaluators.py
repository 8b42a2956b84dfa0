"""The evaluation processes seen from the parent, in-process: a real
EvaluatorPool with real children, driven step by step."""

from __future__ import annotations

import os
import signal
import time
import uuid
from multiprocessing.connection import wait

import pytest

from core.settings import CalculatorSettings
from tests.support import wait_for
from worker.evaluators import EvaluatorPool
from worker.task_queue import Task

SLOW = "fac(300000) / fac(299999)"


@pytest.fixture
def pool():
    pool = EvaluatorPool(CalculatorSettings(num_processes=1, calculation_timeout=1))
    pool.start()
    yield pool
    pool.stop()


def task(task_id: int, expression: str) -> Task:
    return Task(task_id, expression, {}, uuid.uuid4())


def test_a_child_found_dead_past_the_timeout_is_a_crash_not_a_timeout(pool):
    """The loop was held up (its Calculator frozen) while someone killed the
    child early in its task; the first thing it runs afterwards is the
    timeout check. The task died with its process: it goes back to the
    queue with the attempt counted, and is not given a timeout error."""
    slow = task(1, SLOW)
    pool.submit([slow])
    pool.dispatch()
    evaluator = pool.evaluators[0]
    wait_for(lambda: evaluator.running() is not None, message="the task to start")
    os.kill(evaluator.process.pid, signal.SIGKILL)
    wait_for(lambda: not os.path.exists(f"/proc/{evaluator.process.pid}/stat") or
             open(f"/proc/{evaluator.process.pid}/stat").read().rsplit(")", 1)[1].split()[0] == "Z",
             message="the child to die")
    later = time.monotonic() + pool.wall_timeout + 1  # as seen by a loop woken up late
    assert pool.enforce_timeouts(later) == []
    assert pool.crashed == [slow]
    assert pool.evaluators[0] is not evaluator, "replaced"


def test_a_runaway_gets_its_timeout(pool):
    runaway = task(2, "9**(9**9)")
    pool.submit([runaway])
    pool.dispatch()
    wait_for(lambda: pool.evaluators[0].running() is not None, message="the task to start")
    # As the Calculator's loop does: its CPU timer ends the child, whose pipe
    # then reads as closed.
    outcomes = wait_for(lambda: pool.collect(wait(pool.connections(), timeout=0.01)) + pool.finished,
                        timeout=10, message="the timeout")
    assert [(o.task, o.error) for o in outcomes] == [(runaway, "calculation timed out after 1 s of CPU time")]
    assert pool.crashed == []
