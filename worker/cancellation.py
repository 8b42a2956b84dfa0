"""Cancelled tasks (cancel_tasks() in sql/007_retention_counts_cancel.sql)
leave this Calculator at once.

The database already keeps the promise that matters: a cancelled task is no
longer pending, so it is never claimed, and an outcome stored for it later is
discarded by the fence. What is left is not to waste work on it: when a
tasks_cancelled notification arrives, the Calculator asks which of the tasks
it holds were cancelled (one query), drops the ones still queued here,
takes back the unstarted ones from its evaluation processes, and kills (and
replaces) a process that is calculating one. Should a notification be missed
(e.g. during a reconnect), a task running for more than CHECK_SECONDS is
checked every CHECK_SECONDS.
"""

from __future__ import annotations

import logging
import time
from typing import Iterable

import psycopg

from core.logs import format_ids
from worker import tracing
from worker.evaluators import EvaluatorPool
from worker.metrics import METRICS

log = logging.getLogger("calculator.cancellation")

CHANNEL = "tasks_cancelled"
CHECK_SECONDS = 1.0
# Only cancellations: a task another Calculator finished after taking over an
# expired lease is left to the fence (the stale outcome is discarded and logged).
CANCELLED = "SELECT id FROM tasks WHERE id = ANY(%s::bigint[]) AND status = 'cancelled'"


class Cancellation:
    def __init__(self):
        self.due = False
        self.last_check = 0.0

    def note(self, notifications: Iterable) -> None:
        if any(n.channel == CHANNEL for n in notifications):
            self.due = True

    def next_check(self, pool: EvaluatorPool) -> float | None:
        """When check() next has something to do (monotonic time), or None."""
        if self.due:
            return 0.0
        oldest = _oldest_start(pool)
        if oldest is None:
            # A chunk sent but not started yet: no start time to count from;
            # look again in a while (else the loop could sleep until its next
            # poll, seconds later, with nothing on the pipes to wake it).
            return time.monotonic() + CHECK_SECONDS if pool.busy() else None
        return max(oldest, self.last_check) + CHECK_SECONDS

    def check(self, conn: psycopg.Connection, pool: EvaluatorPool, unstored: list) -> list:
        """Drop what was cancelled; returns unstored without the cancelled outcomes."""
        now = time.monotonic()
        when = self.next_check(pool)
        if when is None or now < when:
            return unstored
        # Which of the two found it, for the log (and the tests, which tell
        # the two paths apart by it rather than by the clock).
        found_by = "notified" if self.due else "found by the check every second"
        self.due = False
        self.last_check = now
        held = pool.held_tasks() + [o.task for o in unstored]
        if not held:
            return unstored
        gone = {row[0] for row in conn.execute(CANCELLED, ([t.id for t in held],))}
        if not gone:
            return unstored
        log.info("cancelled ids=%s: dropped (%s)%s", format_ids(sorted(gone)), found_by,
                 tracing.traces_of(t for t in held if t.id in gone))
        drop(pool, gone)
        return [o for o in unstored if o.task.id not in gone]


def drop(pool: EvaluatorPool, gone: set[int]) -> None:
    for evaluator in list(pool.evaluators):
        running = evaluator.running()
        if running and running[0].id in gone and running[0].id in evaluator.unanswered:
            task, started_at = running
            log.warning("cancelled task=%d: killing its evaluation process pid=%s%s",
                        task.id, evaluator.process.pid, tracing.trace_of(task))
            pool._replace(evaluator, task)  # the others it held go back to the queue
            METRICS.killed("cancel")
            if tracing.TRACING is not None:
                tracing.TRACING.evaluated(task, time.monotonic() - started_at, "cancelled", "cancel")
        elif evaluator.busy and any(task_id in gone for task_id in evaluator.unanswered):
            index = evaluator.chunk.index(running[0]) if running else -1
            pool.submit(evaluator.take_back_unstarted(index))
            for task_id in gone:
                evaluator.unanswered.pop(task_id, None)
    pool.queue.remove(gone)


def _oldest_start(pool: EvaluatorPool) -> float | None:
    starts = [running[1] for e in pool.evaluators if (running := e.running()) is not None]
    return min(starts, default=None)
