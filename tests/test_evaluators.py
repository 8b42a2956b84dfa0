"""The evaluation processes seen from the parent, in-process: a real
EvaluatorPool with real children, driven step by step."""

from __future__ import annotations

import os
import signal
import time
import uuid

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
    later = time.monotonic() + pool.timeout + 1  # as seen by a loop woken up late
    assert pool.enforce_timeouts(later) == []
    assert pool.crashed == [slow]
    assert pool.evaluators[0] is not evaluator, "replaced"


def test_a_runaway_gets_its_timeout(pool):
    runaway = task(2, "9**(9**9)")
    pool.submit([runaway])
    pool.dispatch()
    wait_for(lambda: pool.evaluators[0].running() is not None, message="the task to start")
    outcomes = wait_for(lambda: pool.enforce_timeouts(time.monotonic()), timeout=10,
                        message="the timeout")
    assert [(o.task, o.error) for o in outcomes] == [(runaway, "calculation timed out after 1 s")]
    assert pool.crashed == []


def test_a_dead_child_s_batch_mates_are_not_blamed(pool):
    """A child dies under the first task of its chunk: that task alone is
    counted as crashed (its attempt stands); the others of the chunk, which it
    never started, go to the new child and are answered, no attempt counted
    against them (README: "no attempt counted")."""
    culprit, mates = task(10, SLOW), [task(11, "1+1"), task(12, "2*3")]
    pool.submit([culprit, *mates])
    pool.dispatch()
    evaluator = pool.evaluators[0]
    assert [t.id for t in evaluator.chunk] == [10, 11, 12], "one chunk, one child"
    wait_for(lambda: (evaluator.running() or (None,))[0] is culprit, message="the culprit to start")
    os.kill(evaluator.process.pid, signal.SIGKILL)
    evaluator.process.join(10)
    assert pool.collect([evaluator.conn]) == []
    assert pool.crashed == [culprit]
    answered = {}

    def answers():
        pool.dispatch()
        for outcome in pool.collect(pool.connections()):
            answered[outcome.task.id] = (outcome.result, outcome.error)
        return len(answered) == 2
    wait_for(answers, timeout=20, message="the batch-mates' answers")
    assert answered == {11: ("2", None), 12: ("6", None)}
    assert pool.crashed == [culprit]
