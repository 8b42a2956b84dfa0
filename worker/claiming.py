"""When a Calculator claims, and how many (fair claiming).

The database hands tasks out in fair order (sql/queries/claim_tasks.sql).
The Calculator claims

- up to what its children can start within the hold time
  (worker/claim_size.py), when it holds no more than half of that, or has
  an idle child and nothing queued, and has a reason: a notification, a
  full last claim, a hand-back, or the fallback poll every QUEUE_WAIT_TIME;
- once more when a child falls idle and would only get a task of an owner
  that already has a child here (see _claim_for_idle_child).
"""

from __future__ import annotations

import logging
import time

import psycopg

from core.logs import format_ids
from core.settings import CalculatorSettings
from worker import tracing
from worker.claim_frontier import HEAD, ClaimFrontier
from worker.evaluators import EvaluatorPool
from worker.metrics import METRICS
from worker.task_queue import Outcome, Task, claim_tasks, reset_queue_head

log = logging.getLogger("calculator")


class Claims:
    def __init__(self, settings: CalculatorSettings, pool: EvaluatorPool):
        self.settings = settings
        self.pool = pool
        self.work_expected = True  # a notification came, or the last claim was full
        # A claim for an idle child may find another owner's task (see
        # _claim_for_idle_child): true after a notification or a hand-back,
        # false once such a claim brought only owners already running here.
        self.other_owners_expected = True
        self._idle_claimed_at = -1  # pool.freed when it was last done
        self.frontier = ClaimFrontier()  # where each claim's walk starts
        self.next_poll = 0.0
        self.skipped: frozenset = frozenset()  # the tenants the last claim passed over

    def expect_work(self) -> None:
        """Tasks may be waiting: a notification, a hand-back, a new connection."""
        self.work_expected = self.other_owners_expected = True

    def maybe_claim(self, conn: psycopg.Connection, now: float, refused: list[Outcome]) -> None:
        """Claim what there is room and a reason for; the claimed tasks go to
        the pool, the outcomes of rows that cannot be calculated to refused."""
        room = self.room(now)
        if room > 0 and (self.work_expected or now >= self.next_poll):
            self._claim(conn, room, now, refused, polling=not self.work_expected)
        self._claim_for_idle_child(conn, now, refused)

    def _claim_for_idle_child(self, conn: psycopg.Connection, now: float, refused: list) -> None:
        """A child fell idle and would only get a task of an owner that
        already has a child here (maybe a runaway's owner, whose next task is
        another runaway): ask the database first, once per child falling
        idle, for as many tasks as there are such owners and idle children,
        so that the fair order can put another owner's task among them (the
        dispatch rule then serves that owner first). Tasks that do not get
        started are handed back after the hold time."""
        pool = self.pool
        # Not held back by a last claim that came short (work_expected): that
        # one may have been a claim for an idle child, which is small; what
        # tells whether another owner may be waiting is what the last such
        # claim brought (other_owners_expected).
        if not self.other_owners_expected \
                or pool.freed == self._idle_claimed_at or not pool.idle_child_would_share():
            return
        self._idle_claimed_at = pool.freed
        # The fair order gives each owner one task a turn: a claim reaches
        # the next turn of an owner not seen here only if it takes a task of
        # every owner seen here (running or queued) first. (A claim of as
        # many as idle children and running owners, with two keys' backlogs
        # here, took their two tasks of each turn and never the third key's.)
        running = pool.running_by_owner()
        seen = set(running) | pool.queue.owners()
        tasks = self._claim(conn, pool.idle_count() + len(seen) + 1, now, refused)
        # Worth doing again at the next idle child while it brings owners not
        # running here, or, while slow owners (runaways) are here, tasks of
        # owners that are not slow: their next turns come one claim at a
        # time (B's quick tasks, one per turn, even while B's previous one is
        # still running). Not for a single quick owner: no small claims then.
        slow_here = any(pool.usage.slow(owner, now) for owner in seen)
        self.other_owners_expected = any(
            t.owner not in running or (slow_here and not pool.usage.slow(t.owner, now)) for t in tasks)

    def _claim(self, conn: psycopg.Connection, room: int, now: float, refused: list,
               polling: bool = False) -> list[Task]:
        # Tenants ahead of the others in evaluation time are passed over
        # (fair_share.py); one that is no longer ahead has tasks behind the
        # frontier, passed over before: this walk starts at the queue's head.
        waiting = self.pool.cap.waiting()  # keys whose running slots are all taken elsewhere
        skip = frozenset(self.pool.ahead(now) | waiting)
        if self.skipped - skip:
            self.frontier.lower(None)
        self.skipped = skip
        start = self.frontier.start(now, polling)
        began, began_ns = time.monotonic(), time.time_ns()
        tasks, given_up = claim_tasks(conn, room, self.settings.lease_seconds,
                                      self.settings.max_attempts, self.settings.limits, after=start,
                                      skip=skip)
        if skip - waiting and len(tasks) + len(given_up) < room:
            # Nothing else is claimable: the tenants ahead get their turn
            # rather than an idle child (their next claim skips them again).
            more, more_given_up = claim_tasks(conn, room - len(tasks) - len(given_up),
                                              self.settings.lease_seconds, self.settings.max_attempts,
                                              self.settings.limits, after=start, skip=frozenset(waiting))
            tasks += more
            given_up.merge(more_given_up)
        if tracing.TRACING is not None:
            tracing.TRACING.claimed(tasks, given_up, began_ns, time.time_ns())
        took = time.monotonic() - began
        self.frontier.claimed(start, ((t.fair_round, t.id) for t in tasks), now, took)
        METRICS.claim_took(took)
        if start == HEAD:  # the walk that sees every pending task: the low-water mark put right
            reset_queue_head(conn)
        self.next_poll = now + self.settings.queue_wait_time
        self.work_expected = len(tasks) + len(given_up) >= room
        METRICS.count("tasks_given_up", len(given_up))
        if tasks:
            METRICS.claimed(len(tasks))
        if given_up:
            log.warning("gave up on ids=%s after %d attempts%s", format_ids(given_up),
                        self.settings.max_attempts, tracing.traces_of_ids(given_up.trace_contexts.items()))
        if tasks:
            log.info("claimed ids=%s%s", format_ids(t.id for t in tasks), tracing.traces_of(tasks))
        bad = [t for t in tasks if t.problem is not None]
        if bad:  # rows that cannot be calculated: their problem is their outcome
            log.warning("refused ids=%s: rows that cannot be calculated%s", format_ids(t.id for t in bad),
                        tracing.traces_of(bad))
            refused.extend(Outcome(t, None, t.problem) for t in bad)
            tasks = [t for t in tasks if t.problem is None]
        if tasks:
            self.pool.submit(tasks)
        return tasks

    def room(self, now: float) -> int:
        """How many tasks to claim now (0: none)."""
        held = self.pool.held_count()
        target = self.pool.claim_size.target(self.pool.free_children(now))
        # Claim the next batch while the current one is still being evaluated,
        # but not one task at a time as each result comes back (unless a
        # child is idle with nothing queued).
        if held > target // 2 and (self.pool.queue or not self.pool.idle_count()):
            return 0
        return target - held
