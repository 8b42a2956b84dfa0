"""The Calculator's evaluation processes, seen from the parent.

Tasks wait in a local queue and go to idle children in chunks, fairly
between tenants (worker/fair_queue.py: least virtual time first,
fair_share.py; at most MAX_RUNNING_PER_KEY of a key's at once,
running_cap.py; what the pool knows of its tenants: tenants_here.py). The
parent never blocks on a child: it selects on their pipes (see
calculator.py) and reads their progress from shared memory, which is where
the wall-clock half of the timeout rule lives (timeout_rule.py). Deaths:

- a child that dies on its own hands back the task it was running, to be
  released to the database queue with the attempt counted (MAX_ATTEMPTS
  bounds a task that kills every process that tries it); the other tasks of
  its chunk are innocent and go back to the local queue, their attempt not
  counted;
- a child that dies before starting any task of its chunk (say a task too
  big for MEMORY_LIMIT_MB to even receive) gets the chunk once more; when it
  dies before starting again, the chunk is halved, and so on until the
  culprit is alone: only then is an attempt counted, against it alone;
- a child killed by its CPU timer (SIGPROF) or by the guard thread past the
  wall-clock ceiling is a timeout, not a crash (timeout_rule.py).
"""

from __future__ import annotations

import logging
import math
import multiprocessing
import signal
import time
from multiprocessing.connection import Connection

from core.settings import CalculatorSettings
from core.logs import format_ids
from worker.metrics import METRICS
from worker.claim_size import ClaimSize
from worker import tracing
from worker.evaluation import OUT_OF_MEMORY, STARTED
from worker.evaluator import Evaluator
from worker.fair_queue import FairQueue, OwnerUsage
from worker.fair_share import FairShare
from worker.running_cap import RunningCap
from worker.tenants_here import TenantsHere
from worker.timeout_rule import STALL_SECONDS, TimeoutRule
from worker.task_queue import Outcome, Task
from worker.timeout_guard import TimeoutGuard

log = logging.getLogger("calculator.evaluators")

CHUNK_MAX = 64


def _context():
    # fork: a replacement child starts in milliseconds, and its parent is the
    # Calculator itself, so it can ask to be killed when the Calculator dies
    # (with forkserver, a runaway child would keep the server, and itself,
    # alive). The Calculator is single-threaded and the child never touches
    # the inherited database connections; it leaves with os._exit.
    return multiprocessing.get_context("fork")


class EvaluatorPool(TenantsHere, TimeoutRule):
    def __init__(self, settings: CalculatorSettings):
        self.settings = settings
        self.context = _context()
        self.queue = FairQueue()
        self.claim_size = ClaimSize(settings)  # fed with every evaluation's seconds
        self.usage = OwnerUsage()  # evaluation seconds per owner lately: which owners are slow
        self.fair = FairShare()    # each tenant's virtual time: the dispatch order, the claims' skips
        self._running_seconds: tuple[float, dict] = (-1.0, {})  # (when, running_seconds())
        self.cap = RunningCap(settings.max_running_per_key)  # MAX_RUNNING_PER_KEY's slots
        self.freed = 0  # how many times a child became idle (a chunk done, a replacement)
        self.evaluators: list[Evaluator] = []
        self.timeout = settings.calculation_timeout  # CPU seconds, kept by the child's timer
        self.wall_timeout = settings.wall_timeout    # wall-clock seconds, kept here
        self.crashed: list[Task] = []  # tasks whose child died under them
        # Outcomes decided here rather than by a child: a timeout found at a
        # child's death, a task that could not be sent to a child.
        self.finished: list[Outcome] = []
        # Children that died before starting any task of a chunk, per task:
        # how many times, and the largest chunk the task may go in now.
        self.prestart_deaths: dict[int, int] = {}
        self.chunk_limit: dict[int, int] = {}
        self._spawned = 0
        self.guard = TimeoutGuard(self)

    def start(self) -> None:
        self.evaluators = [self._spawn() for _ in range(self.settings.num_processes)]
        self.guard.start()

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
        """Queue tasks: newly claimed ones, or ones coming back unstarted
        (they go back to their place in the fair order). A tenant that had
        nothing here starts at the system's virtual time (fair_share.py)."""
        if not tasks:
            return
        now = time.monotonic()
        present = self.present(now)
        for tenant in {t.owner for t in tasks} - set(present):
            self.fair.arrived(tenant, now)
        self.queue.add(tasks, now)

    def take_queued(self) -> list[Task]:
        return self.queue.take_all()

    def overdue(self, now: float) -> list[Task]:
        """Queued tasks that waited unstarted past the hold time: to hand back."""
        return self.queue.overdue(now, self.claim_size.hold)

    def idle_count(self) -> int:
        return sum(1 for e in self.evaluators if not e.busy)

    def free_children(self, now: float) -> int:
        """Children not on a task that already ran past STALL_SECONDS."""
        stuck = 0
        for evaluator in self.evaluators:
            running = evaluator.running()
            if running is not None and now - running[1] >= STALL_SECONDS:
                stuck += 1
        return len(self.evaluators) - stuck

    # --- moving work ------------------------------------------------------

    def dispatch(self) -> None:
        idle = [e for e in self.evaluators if not e.busy]
        if not (idle and self.queue):
            return
        running = self.running_by_owner()
        now = time.monotonic()
        present = self.present(now)
        allowance = self.chunk_allowance(present, now)
        in_use = self.processes_by_owner()
        while idle and self.queue:
            chunk = self.queue.next_chunk(min(CHUNK_MAX, math.ceil(len(self.queue) / len(idle))),
                                          running, self._chunk_limit_of, present.__getitem__,
                                          lambda o: self.cap.may_start(o, in_use), allowance)
            if not chunk:
                return  # what is queued waits for a running slot (MAX_RUNNING_PER_KEY)
            owner = chunk[0].owner
            running[owner] = running.get(owner, 0) + 1
            for owner in {t.owner for t in chunk}:
                in_use[owner] = in_use.get(owner, 0) + 1
            evaluator = idle.pop()
            try:
                evaluator.send(chunk)
            except OSError:  # it died, since the last select or while receiving
                self._on_death(evaluator)
            except Exception as error:  # the chunk cannot be pickled: nothing was sent
                evaluator.busy, evaluator.chunk, evaluator.unanswered = False, [], {}
                self._unsendable(chunk, error)

    def _chunk_limit_of(self, task_id: int) -> int:
        """The largest chunk a task may go in."""
        return self.chunk_limit.get(task_id, CHUNK_MAX)

    def _unsendable(self, chunk: list[Task], error: Exception) -> None:
        if len(chunk) == 1:
            log.error("cannot send task=%d to an evaluation process: %r%s", chunk[0].id, error,
                      tracing.trace_of(chunk[0]))
            self.finished.append(Outcome(chunk[0], None,
                                         "the task cannot be sent to an evaluation process"))
            return
        for task in chunk:  # one at a time, to find the one that cannot go
            self.chunk_limit[task.id] = 1
        self.submit(chunk)

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
        total = 0.0
        now = time.monotonic()
        for task_id, result, error, seconds, cpu_seconds in results:
            METRICS.evaluated(seconds)
            total += seconds
            task = evaluator.unanswered.pop(task_id, None)
            if task is not None:  # else it was taken back meanwhile and sent elsewhere
                if error == OUT_OF_MEMORY:
                    METRICS.killed("memory")
                if tracing.TRACING is not None:
                    tracing.TRACING.evaluated(task, seconds, error,
                                              "memory" if error == OUT_OF_MEMORY else None)
                outcomes.append(Outcome(task, result, error))
                self.usage.charge(task.owner, seconds, now)
                self.fair.charge(task.owner, cpu_seconds, now)
                self._forget(task_id)
        if results:
            self.claim_size.observe(total, time.monotonic(), len(results))
        if kind == "done":
            # Whatever is left was cut off before it started: back to the queue.
            self.submit(list(evaluator.unanswered.values()))
            evaluator.unanswered = {}
            evaluator.chunk = []
            evaluator.busy = False
            self.freed += 1

    def _on_death(self, evaluator: Evaluator) -> None:
        running = evaluator.running()
        culprit = running[0] if running and running[0].id in evaluator.unanswered else None
        if culprit is not None and evaluator.killed_by_guard:
            # Killed by the guard thread past the wall-clock ceiling: a
            # timeout, not a crash. (Not any death late in a task: a child
            # killed by someone else while this loop was held up is a crash
            # like any other.)
            self.finished.extend(self._kill_runaway(evaluator))
            return
        if culprit is not None and evaluator.exit_signal() == signal.SIGPROF:
            # Its CPU timer ran out on this task: the CPU-time timeout.
            self.finished.append(self._cpu_timeout(evaluator, culprit, running[1]))
            return
        before_start = culprit is None and self._died_before_starting(evaluator)
        log.error("evaluation process died pid=%s exitcode=%s task=%s%s%s",
                  evaluator.process.pid, evaluator.process.exitcode,
                  culprit.id if culprit else None,
                  f" before starting ids={format_ids(evaluator.unanswered)}" if before_start else "",
                  tracing.trace_of(culprit) if culprit else
                  tracing.traces_of(evaluator.unanswered.values()) if before_start else "")
        if culprit is not None and tracing.TRACING is not None:
            tracing.TRACING.evaluated(culprit, time.monotonic() - running[1],
                                      "the evaluation process died under the task; it goes back to the queue")
        if before_start:
            culprit = self._suspect(list(evaluator.unanswered.values()))
        METRICS.count("evaluation_processes_died")
        self._replace(evaluator, culprit)
        if culprit is not None:
            self.crashed.append(culprit)
            self._forget(culprit.id)

    @staticmethod
    def _died_before_starting(evaluator: Evaluator) -> bool:
        return (evaluator.busy and int(evaluator.progress[STARTED]) < 0
                and bool(evaluator.unanswered) and len(evaluator.unanswered) == len(evaluator.chunk))

    def _suspect(self, chunk: list[Task]) -> Task | None:
        """A child died before starting chunk: the culprit, once it is alone
        and has done so twice, else None (the chunk goes again, halved from
        the second time on)."""
        size = len(chunk)
        for task in chunk:
            deaths = self.prestart_deaths.get(task.id, 0) + 1
            self.prestart_deaths[task.id] = deaths
            if deaths >= 2:
                if size == 1:
                    return task
                self.chunk_limit[task.id] = max(1, size // 2)
            else:
                self.chunk_limit[task.id] = size
        return None

    def _forget(self, task_id: int) -> None:
        self.prestart_deaths.pop(task_id, None)
        self.chunk_limit.pop(task_id, None)

    def _replace(self, evaluator: Evaluator, culprit: Task | None) -> None:
        """Kill (if alive) and replace a child; its innocent tasks are requeued."""
        evaluator.kill()
        innocent = [t for t in evaluator.unanswered.values() if t is not culprit]
        self.submit(innocent)
        index = self.evaluators.index(evaluator)
        self.evaluators[index] = self._spawn()
        self.freed += 1

    # --- stopping ---------------------------------------------------------

    def finish_current_only(self) -> None:
        """Let each child finish the task it is on and start nothing else."""
        for evaluator in self.evaluators:
            if evaluator.busy:
                running = evaluator.running()
                index = evaluator.chunk.index(running[0]) if running else -1
                self.submit(evaluator.take_back_unstarted(index))

    def end_running(self) -> list[int]:
        """Kill (and replace) every child that is on a task: its tasks go
        back to the queue, not blamed. The ids of the tasks that were running."""
        ended = []
        for evaluator in list(self.evaluators):
            running = evaluator.running()
            if running is not None and running[0].id in evaluator.unanswered:
                ended.append(running[0].id)
                self._replace(evaluator, None)
        return ended

    def stop(self) -> None:
        self.guard.stop()
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

