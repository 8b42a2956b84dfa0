"""The timeout rule, as the Calculator keeps it (worker/evaluators.py's pool
inherits it):

- a task that used more than CALCULATION_TIMEOUT of CPU time is ended by the
  kernel (its process's CPU timer, evaluation.py: SIGPROF); the process's
  death by SIGPROF gives the task its timeout error (evaluators.py's
  _on_death calls _cpu_timeout), and the process is replaced;
- a task still running CALCULATION_WALL_TIMEOUT after it started (its process
  stopped, starved or throttled, not using its CPU time) gets a timeout error
  of its own and its process is SIGKILLed and replaced;
- a chunk that has been running for STALL_SECONDS (since it was sent)
  gives up the tasks queued behind the one running, so that other processes
  calculate them meanwhile, and the Calculator decides again whose tasks
  come next (by the task running alone, a chunk of 50 tasks of 0.09 s each
  ran whole: 4.5 s of one key's, however far ahead of its share that put it);
- a timeout charges the task's tenant its whole CALCULATION_TIMEOUT
  (worker/fair_share.py).

While the Calculator's loop waits on a slow database statement, the guard
thread (timeout_guard.py) keeps the wall-clock ceiling by killing the
process; the loop then finds the death.
"""

from __future__ import annotations

import logging
import time

from worker import tracing
from worker.evaluation import CUTOFF
from worker.evaluator import Evaluator
from worker.metrics import METRICS
from worker.task_queue import Outcome, Task

log = logging.getLogger("calculator.evaluators")

STALL_SECONDS = 0.1


class TimeoutRule:
    def enforce_timeouts(self, now: float) -> list[Outcome]:
        """The wall-clock ceiling (the CPU timeout is the children's own)."""
        outcomes = []
        for evaluator in list(self.evaluators):
            running = evaluator.running()
            if running is None:
                continue
            task, started_at = running
            if now - started_at >= self.wall_timeout:
                if evaluator.process.exitcode is not None:
                    # Dead already, not running: its CPU timer ran out, or it
                    # was killed by someone else while this loop was held up
                    # (a frozen Calculator). Read what it sent; the end of its
                    # pipe then tells of its death.
                    outcomes.extend(self.collect([evaluator.conn]))
                    continue
                outcomes.extend(self._kill_runaway(evaluator))
            elif now - evaluator.sent_at >= STALL_SECONDS:
                index = evaluator.chunk.index(task)
                taken = evaluator.take_back_unstarted(index)
                if taken:
                    self.submit(taken)
        return outcomes

    def _kill_runaway(self, evaluator: Evaluator) -> list[Outcome]:
        """Past the wall-clock ceiling: kill the child; its task's timeout."""
        evaluator.kill()
        METRICS.count("evaluation_processes_killed")
        # Read progress only now that the child is frozen: if it moved on to
        # another task in the meantime, that task did not overrun.
        running = evaluator.running()
        if running is None or time.monotonic() - running[1] < self.wall_timeout \
                or running[0].id not in evaluator.unanswered:
            self._replace(evaluator, None)
            return []
        task = running[0]
        log.warning("calculation timed out task=%d after=%ss of wall-clock time "
                    "(its process did not get to use its CPU time)%s", task.id, _seconds(self.wall_timeout),
                    tracing.trace_of(task))
        return [self._timed_out(evaluator, task, running[1],
                                f"calculation timed out after {_seconds(self.wall_timeout)} s "
                                f"of wall-clock time")]

    def _cpu_timeout(self, evaluator: Evaluator, task: Task, started_at: float) -> Outcome:
        """The child died of its CPU timer on task: the task's timeout."""
        log.warning("calculation timed out task=%d after=%ss of CPU time%s", task.id, _seconds(self.timeout),
                    tracing.trace_of(task))
        METRICS.count("evaluation_processes_killed")  # by its own CPU timer
        return self._timed_out(evaluator, task, started_at,
                               f"calculation timed out after {_seconds(self.timeout)} s of CPU time")

    def _timed_out(self, evaluator: Evaluator, task: Task, started_at: float, error: str) -> Outcome:
        now = time.monotonic()
        METRICS.count("evaluation_timeouts")
        METRICS.killed("timeout")
        METRICS.evaluated(now - started_at)
        if tracing.TRACING is not None:
            tracing.TRACING.evaluated(task, now - started_at, error, "timeout")
        self.claim_size.observe(now - started_at, now)
        self.usage.charge(task.owner, now - started_at, now)
        self.fair.charge(task.owner, self.timeout, now)  # a timeout charges the whole budget
        self._replace(evaluator, task)
        self._forget(task.id)
        return Outcome(task, None, error)

    def next_deadline(self) -> float | None:
        """When enforce_timeouts next has something to decide."""
        deadlines = []
        now = time.monotonic()
        for evaluator in self.evaluators:
            running = evaluator.running()
            if running is None:
                if evaluator.busy and len(evaluator.chunk) > 1 and evaluator.sent_at + STALL_SECONDS > now:
                    # Sent, not started yet: look again when its first task
                    # may have stalled (else the stall rule waits for the
                    # next event).
                    deadlines.append(evaluator.sent_at + STALL_SECONDS)
                continue
            task, started_at = running
            deadlines.append(started_at + self.wall_timeout)
            if evaluator.progress[CUTOFF] > evaluator.chunk.index(task) + 1:
                deadlines.append(evaluator.sent_at + STALL_SECONDS)
        return min(deadlines, default=None)



def _seconds(value: float) -> str:
    return f"{value:g}"
