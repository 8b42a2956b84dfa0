"""The Calculator's evaluation processes, seen from the parent.

Tasks wait in a local queue and go to idle children in chunks. The parent
never blocks on a child: it selects on their pipes (see calculator.py) and
reads their progress from shared memory, which is where the timeout rule
lives (enforce_timeouts):

- a task running longer than CALCULATION_TIMEOUT gets a timeout error and
  its child is SIGKILLed and replaced;
- a task running longer than STALL_SECONDS gives up the tasks queued behind
  it in the same chunk, so that other children calculate them meanwhile
  (one runaway does not hold back the quick tasks claimed with it);
- a child that dies on its own hands back the task it was running, to be
  released to the database queue with the attempt counted (MAX_ATTEMPTS
  bounds a task that kills every process that tries it).
"""

from __future__ import annotations

import logging
import math
import multiprocessing
import os
import signal
import time
from collections import deque
from multiprocessing.connection import Connection

from core.settings import CalculatorSettings
from worker.metrics import METRICS
from worker.evaluation import CUTOFF, PROGRESS_SLOTS, STARTED, STARTED_AT, run_child
from worker.task_queue import Outcome, Task

log = logging.getLogger("calculator.evaluators")

CHUNK_MAX = 64
STALL_SECONDS = 0.1


def _context():
    # fork: a replacement child starts in milliseconds, and its parent is the
    # Calculator itself, so it can ask to be killed when the Calculator dies
    # (with forkserver, a runaway child would keep the server, and itself,
    # alive). The Calculator is single-threaded and the child never touches
    # the inherited database connections; it leaves with os._exit.
    return multiprocessing.get_context("fork")


class Evaluator:
    """One child process and what it has been sent."""

    def __init__(self, context, settings: CalculatorSettings, number: int):
        self.number = number
        self.progress = context.RawArray("d", PROGRESS_SLOTS)
        self.progress[STARTED] = -1
        parent_end, child_end = context.Pipe()
        self.process = context.Process(
            target=run_child, name=f"evaluator-{number}", daemon=True,
            args=(child_end, self.progress, settings.limits, settings.memory_limit_mb))
        self.process.start()
        child_end.close()
        self.conn: Connection = parent_end
        self.chunk: list[Task] = []
        self.unanswered: dict[int, Task] = {}
        self.busy = False

    def send(self, tasks: list[Task]) -> None:
        """Raises OSError if the child is gone (its tasks are then unanswered)."""
        self.chunk = tasks
        self.unanswered = {t.id: t for t in tasks}
        self.progress[STARTED] = -1
        self.progress[CUTOFF] = len(tasks)
        self.busy = True
        self.conn.send([(t.id, t.expression, t.variables) for t in tasks])

    def running(self) -> tuple[Task, float] | None:
        """The task being calculated and since when, if any."""
        started_at = self.progress[STARTED_AT]
        index = int(self.progress[STARTED])
        if not self.busy or index < 0 or index >= len(self.chunk):
            return None
        return self.chunk[index], started_at

    def take_back_unstarted(self, after_index: int) -> list[Task]:
        """Tell the child not to start tasks after after_index; return them."""
        self.progress[CUTOFF] = after_index + 1
        taken = [t for t in self.chunk[after_index + 1:] if t.id in self.unanswered]
        for task in taken:
            del self.unanswered[task.id]
        return taken

    def kill(self) -> None:
        if self.process.exitcode is None:  # never signal a reaped (maybe reused) pid
            try:
                os.kill(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.process.join()
        if not self.conn.closed:
            self.conn.close()


class EvaluatorPool:
    def __init__(self, settings: CalculatorSettings):
        self.settings = settings
        self.context = _context()
        self.queue: deque[Task] = deque()
        self.evaluators: list[Evaluator] = []
        self.crashed: list[Task] = []  # tasks whose child died under them
        self._spawned = 0

    def start(self) -> None:
        self.evaluators = [self._spawn() for _ in range(self.settings.num_processes)]

    def _spawn(self) -> Evaluator:
        self._spawned += 1
        return Evaluator(self.context, self.settings, self._spawned)

    # --- what is held -----------------------------------------------------

    def held_tasks(self) -> list[Task]:
        """Every claimed task not yet answered: queued or being calculated."""
        held = list(self.queue)
        for evaluator in self.evaluators:
            held.extend(evaluator.unanswered.values())
        return held

    def held_count(self) -> int:
        return len(self.queue) + sum(len(e.unanswered) for e in self.evaluators)

    def busy(self) -> bool:
        return any(e.busy for e in self.evaluators)

    def submit(self, tasks: list[Task]) -> None:
        self.queue.extend(tasks)

    def take_queued(self) -> list[Task]:
        taken = list(self.queue)
        self.queue.clear()
        return taken

    # --- moving work ------------------------------------------------------

    def dispatch(self) -> None:
        idle = [e for e in self.evaluators if not e.busy]
        while idle and self.queue:
            size = min(CHUNK_MAX, math.ceil(len(self.queue) / len(idle)))
            chunk = [self.queue.popleft() for _ in range(size)]
            evaluator = idle.pop()
            try:
                evaluator.send(chunk)
            except OSError:  # it died since the last select: the chunk goes back
                self._on_death(evaluator)

    def connections(self) -> list[Connection]:
        return [e.conn for e in self.evaluators]

    def collect(self, ready: list) -> list[Outcome]:
        """Read every message waiting on the ready pipes."""
        outcomes: list[Outcome] = []
        for evaluator in list(self.evaluators):
            if evaluator.conn not in ready:
                continue
            try:
                while evaluator.conn.poll():
                    self._read_message(evaluator, evaluator.conn.recv(), outcomes)
            except (EOFError, OSError):
                self._on_death(evaluator)
        return outcomes

    def _read_message(self, evaluator: Evaluator, message, outcomes: list[Outcome]) -> None:
        kind, results = message
        for task_id, result, error, seconds in results:
            METRICS.evaluated(seconds)
            task = evaluator.unanswered.pop(task_id, None)
            if task is not None:  # else it was taken back meanwhile and sent elsewhere
                outcomes.append(Outcome(task, result, error))
        if kind == "done":
            # Whatever is left was cut off before it started: back to the queue.
            self.queue.extendleft(reversed(list(evaluator.unanswered.values())))
            evaluator.unanswered = {}
            evaluator.chunk = []
            evaluator.busy = False

    def _on_death(self, evaluator: Evaluator) -> None:
        running = evaluator.running()
        culprit = running[0] if running and running[0].id in evaluator.unanswered else None
        log.error("evaluation process died pid=%s exitcode=%s task=%s",
                  evaluator.process.pid, evaluator.process.exitcode,
                  culprit.id if culprit else None)
        METRICS.count("evaluation_processes_died")
        self._replace(evaluator, culprit)
        if culprit is not None:
            self.crashed.append(culprit)

    def _replace(self, evaluator: Evaluator, culprit: Task | None) -> None:
        """Kill (if alive) and replace a child; its innocent tasks are requeued."""
        evaluator.kill()
        innocent = [t for t in evaluator.unanswered.values() if t is not culprit]
        self.queue.extendleft(reversed(innocent))
        index = self.evaluators.index(evaluator)
        self.evaluators[index] = self._spawn()

    # --- the timeout rule -------------------------------------------------

    def enforce_timeouts(self, now: float) -> list[Outcome]:
        outcomes = []
        timeout = self.settings.calculation_timeout
        for evaluator in list(self.evaluators):
            running = evaluator.running()
            if running is None:
                continue
            task, started_at = running
            if now - started_at >= timeout:
                outcomes.extend(self._kill_runaway(evaluator, timeout))
            elif now - started_at >= STALL_SECONDS:
                index = evaluator.chunk.index(task)
                taken = evaluator.take_back_unstarted(index)
                if taken:
                    self.queue.extendleft(reversed(taken))
        return outcomes

    def _kill_runaway(self, evaluator: Evaluator, timeout: float) -> list[Outcome]:
        evaluator.kill()
        METRICS.count("evaluation_processes_killed")
        # Read progress only now that the child is frozen: if it moved on to
        # another task in the meantime, that task did not overrun.
        running = evaluator.running()
        if running is None or time.monotonic() - running[1] < timeout \
                or running[0].id not in evaluator.unanswered:
            self._replace(evaluator, None)
            return []
        task = running[0]
        log.warning("calculation timed out task=%d after=%ss", task.id, _seconds(timeout))
        METRICS.count("evaluation_timeouts")
        METRICS.evaluated(time.monotonic() - running[1])
        self._replace(evaluator, task)
        return [Outcome(task, None, f"calculation timed out after {_seconds(timeout)} s")]

    def next_deadline(self) -> float | None:
        """When enforce_timeouts next has something to decide."""
        deadlines = []
        for evaluator in self.evaluators:
            running = evaluator.running()
            if running is None:
                continue
            task, started_at = running
            deadlines.append(started_at + self.settings.calculation_timeout)
            if evaluator.progress[CUTOFF] > evaluator.chunk.index(task) + 1:
                deadlines.append(started_at + STALL_SECONDS)
        return min(deadlines, default=None)

    # --- stopping ---------------------------------------------------------

    def finish_current_only(self) -> None:
        """Let each child finish the task it is on and start nothing else."""
        for evaluator in self.evaluators:
            if evaluator.busy:
                running = evaluator.running()
                index = evaluator.chunk.index(running[0]) if running else -1
                self.queue.extend(evaluator.take_back_unstarted(index))

    def stop(self) -> None:
        for evaluator in self.evaluators:
            try:
                evaluator.conn.send(None)
            except OSError:
                pass
        deadline = time.monotonic() + 2
        for evaluator in self.evaluators:
            evaluator.process.join(max(0.0, deadline - time.monotonic()))
            if evaluator.process.is_alive():
                evaluator.kill()


def _seconds(value: float) -> str:
    return f"{value:g}"
