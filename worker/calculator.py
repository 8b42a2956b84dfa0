"""The Calculator's main loop: LISTEN, claim, evaluate, store.

One thread, one select() over the LISTEN connection, the evaluation
processes' pipes and a signal wake-up pipe:

    wait ─► a notification, a result, a deadline or a signal
     ▲      │
     │      ▼
     └── store outcomes, release what must go back (and hand back what
         waited unstarted past the hold time), claim when there is room and
         a reason (a notification, a full last batch, a hand-back, or the
         fallback poll every QUEUE_WAIT_TIME), hand tasks to idle children
         fairly between owners

Fair claiming (docs/design.md, "Fair claiming"): when and how much to claim is worker/claiming.py
(and claim_size.py); the local queue's order, fair_queue.py.

Two connections: one only LISTENs (so a notification is seen the moment it
arrives, whatever the other is doing), the other runs the queue statements.
When the database goes away the loop keeps evaluating what it holds, keeps
the outcomes, reconnects with backoff, and on reconnecting stores them and
polls once to catch up with what was inserted meanwhile.

Nothing but SIGTERM/SIGINT ends the loop. A statement that fails (a lock
wait past LOCK_TIMEOUT, a statement past STATEMENT_TIMEOUT, a refused
privilege, a read-only server after a failover) is logged once and retried
with backoff, reconnecting where the session is the problem; even a bug in
the loop is logged with its traceback and survived. While the loop waits on
a statement, a guard thread keeps the wall-clock ceiling, CALCULATION_WALL_TIMEOUT
(timeout_guard.py; CALCULATION_TIMEOUT, CPU time, is each child's own). An
outcome whose row another session holds locked is kept and stored later,
while the rest of its batch is stored now.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import signal
import time

import psycopg

from core.logs import format_ids
from core.settings import CalculatorSettings
from worker.cancellation import Cancellation
from worker.claiming import Claims
from worker.evaluators import EvaluatorPool
from worker.metrics import METRICS
from worker import tracing
from worker.registry import HEARTBEAT_SECONDS, Registration
from worker.retention import Retention
from worker.sessions import BACKOFF_FIRST, BACKOFF_MAX, RECONNECT_ERRORS, DatabaseSessions
from worker.task_queue import (TASKS_CHANNEL, Outcome, Task, extend_leases,
                               release_tasks, store_outcomes)
from worker.trouble import Trouble

log = logging.getLogger("calculator")

SHUTDOWN_GRACE = 3.0  # seconds beyond CALCULATION_TIMEOUT to hand back what is held
HAND_BACK_SECONDS = 1.0  # then to hand back the tasks whose evaluation it ended
HELD_BACK_RETRY = 0.5  # seconds between tries to store outcomes whose rows are locked


class Calculator(DatabaseSessions):
    def __init__(self, settings: CalculatorSettings, url: str = ""):
        self.settings = settings
        self.url = url
        self.pool = EvaluatorPool(settings)
        self.registration = Registration(settings)
        self.retention = Retention(settings)
        self.cancellation = Cancellation()
        self.next_heartbeat = 0.0
        self.listen_conn: psycopg.Connection | None = None
        self.work_conn: psycopg.Connection | None = None

        self.unstored: list[Outcome] = []
        self.held_back: list[Outcome] = []  # their rows were locked by another session
        self.next_held_back_try = 0.0
        self._held_back_logged: set[int] = set()
        self.to_release: list[Task] = []          # handed back, attempt not counted
        self.to_release_counted: list[Task] = []  # their child died: attempt counted

        self.claims = Claims(settings, self.pool)
        self._cap_warned: set = set()  # Calculators told of for another MAX_RUNNING_PER_KEY
        self.next_lease_extension = 0.0

        self.outage_since: float | None = None
        self._outage_reason = ""
        self.next_reconnect = 0.0
        self.backoff = BACKOFF_FIRST
        self.statements = Trouble(log, "database statement", BACKOFF_FIRST, BACKOFF_MAX)
        self.loop_trouble = Trouble(log, "the Calculator's loop", 0.1, BACKOFF_MAX)

        self.stopping = False
        self.stop_deadline = 0.0
        self.stop_cut_off = False  # the running evaluations were ended at the stop deadline
        self._wake_read, self._wake_write = os.pipe()

    # --- life cycle ---------------------------------------------------------

    def run(self) -> int:
        self._connect_at_start()
        self.pool.start()
        self._install_signal_handlers()
        log.info("calculator started %s%s", self.settings.describe(),
                 " traces=otlp" if tracing.TRACING is not None else "")
        try:
            while not self._finished():
                self._survive_step()
        finally:
            self.pool.stop()
            self._deregister()
            self._disconnect()
        log.info("calculator stopped")
        return 0

    def _install_signal_handlers(self) -> None:
        os.set_blocking(self._wake_write, False)
        signal.set_wakeup_fd(self._wake_write)
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._on_stop_signal)

    def _on_stop_signal(self, signum, frame) -> None:
        if not self.stopping:
            self.stopping = True
            self.stop_deadline = time.monotonic() + self.settings.calculation_timeout + SHUTDOWN_GRACE

    def _finished(self) -> bool:
        if not self.stopping:
            return False
        settled = not (self.pool.held_count() or self.unstored or self.held_back
                       or self.to_release or self.to_release_counted)
        if settled:
            return True
        if time.monotonic() >= self.stop_deadline:
            if not self.stop_cut_off:
                # CALCULATION_TIMEOUT is CPU time: on an overloaded machine a
                # task may still be running. End its process and hand it back
                # with the rest (its attempt not counted), then exit.
                self.stop_cut_off = True
                ended = self.pool.end_running()
                if ended:
                    log.warning("stopping: ended the evaluation of ids=%s, still running %gs after "
                                "the signal; handing them back", format_ids(ended),
                                self.settings.calculation_timeout + SHUTDOWN_GRACE)
                    self.stop_deadline = time.monotonic() + HAND_BACK_SECONDS
                    return False
            left = self.pool.held_tasks() + [o.task for o in self.unstored + self.held_back]
            log.warning("stopping with work not handed back ids=%s: their leases will expire%s",
                        format_ids(t.id for t in left), tracing.traces_of(left))
            return True
        return False

    # --- one turn of the loop -----------------------------------------------

    def _survive_step(self) -> None:
        try:
            self._step()
        except Exception as error:  # a bug: logged with its traceback, survived
            self.loop_trouble.failed(error, traceback=True)
            self.pool.guard.arm(True)
            time.sleep(max(0.0, self.loop_trouble.retry_at - time.monotonic()))
            self.pool.guard.arm(False)
        else:
            if self.loop_trouble.failing:
                self.loop_trouble.succeeded()

    def _step(self) -> None:
        if self.stopping:
            self.pool.finish_current_only()
            self.to_release.extend(self.pool.take_queued())
        if self.work_conn is None and time.monotonic() >= self.next_reconnect:
            with self._guarded():
                self._reconnect()
        if self.work_conn is not None and self.statements.ready(time.monotonic()):
            with self._guarded():
                try:
                    self._database_work()
                except psycopg.Error as error:
                    self._statement_failed(error)
                else:
                    if self.outage_since is not None:
                        self._restored()
                    if self.statements.failing:
                        self.statements.succeeded()
        self.pool.dispatch()
        self._wait_and_collect()

    @contextlib.contextmanager
    def _guarded(self):
        """While statements run, the guard thread keeps the wall-clock ceiling."""
        self.pool.guard.arm(True)
        try:
            yield
        finally:
            self.pool.guard.arm(False)

    def _statement_failed(self, error: psycopg.Error) -> None:
        conn = self.work_conn
        if conn is None or conn.closed or conn.broken or isinstance(error, RECONNECT_ERRORS):
            self._lost_connection(error)
        else:
            self.statements.failed(error)

    def _database_work(self) -> None:
        conn = self.work_conn
        self.unstored = self.cancellation.check(conn, self.pool, self.unstored)
        if self.held_back and time.monotonic() >= self.next_held_back_try:
            retry, self.held_back = self.held_back, []
            try:
                self._store(conn, retry, skip_locked=True)
            except BaseException:
                self.held_back = retry + self.held_back
                raise
        if self.unstored:
            outcomes, self.unstored = self.unstored, []
            try:
                self._store(conn, outcomes)
            except BaseException:
                self.unstored = outcomes + self.unstored
                raise
        overdue = [] if self.stopping else self.pool.overdue(time.monotonic())
        if overdue:
            METRICS.count("tasks_handed_back", len(overdue))
            self.to_release.extend(overdue)
            self.claims.expect_work()  # claim again at once
        for pending, count_attempt in ((self.to_release, False), (self.to_release_counted, True)):
            if pending:
                released = release_tasks(conn, pending, count_attempt=count_attempt)
                log.info("released ids=%s%s%s", format_ids(released),
                         " (their evaluation process died)" if count_attempt
                         else " (handed back: waited unstarted past the hold time)" if overdue else "",
                         tracing.traces_of(t for t in pending if t.id in released))
                pending.clear()
        now = time.monotonic()
        if now >= self.next_heartbeat:
            self.registration.heartbeat(conn)
            self.next_heartbeat = now + HEARTBEAT_SECONDS
        fair = self.pool.fair
        if fair.refresh_due(now, active=self.pool.held_count() > 0):
            fair.refresh(conn, self.registration.id, now, self.pool.running_by_owner())
            self._check_caps(fair.other_caps)
        if now >= self.next_lease_extension:
            held = self.pool.held_tasks() + [o.task for o in self.unstored + self.held_back]
            if held:
                extend_leases(conn, held, self.settings.lease_seconds)
            self.next_lease_extension = now + self.settings.lease_seconds / 3
        self.pool.sync_running_slots(conn, now)
        if not self.stopping:
            self.claims.maybe_claim(conn, now, self.unstored)
            self.retention.maybe_run(conn, now)

    def _check_caps(self, caps: dict) -> None:
        """MAX_RUNNING_PER_KEY must be the same on every Calculator: say so,
        once per Calculator, where it is not."""
        mine = self.settings.max_running_per_key
        for calculator, cap in caps.items():
            if cap is not None and cap != mine and calculator not in self._cap_warned:
                self._cap_warned.add(calculator)
                log.warning("MAX_RUNNING_PER_KEY is %s here but %s on calculator %s: every Calculator "
                            "must have the same value, or a key may run more tasks at once than either "
                            "says", mine or "none", cap or "none", calculator)

    def _store(self, conn: psycopg.Connection, outcomes: list[Outcome], skip_locked: bool = False) -> None:
        began_ns = time.time_ns()
        stored, locked = store_outcomes(conn, outcomes, skip_locked=skip_locked)
        if tracing.TRACING is not None:
            tracing.TRACING.stored(outcomes, stored, locked, began_ns, time.time_ns())
        stale = [o.task for o in outcomes if o.task.id not in stored and o.task.id not in locked]
        METRICS.count("results_stored", len(stored))
        METRICS.count("stale_results_discarded", len(stale))
        if stored:
            log.info("stored ids=%s%s", format_ids(stored),
                     tracing.traces_of(o.task for o in outcomes if o.task.id in stored))
            self._held_back_logged -= stored
        if locked:
            self.held_back.extend(o for o in outcomes if o.task.id in locked)
            self.next_held_back_try = time.monotonic() + HELD_BACK_RETRY
            new = locked - self._held_back_logged
            if new:
                log.warning("holding back results ids=%s: another session holds their rows "
                            "locked; storing them when it lets go%s", format_ids(new),
                            tracing.traces_of(o.task for o in outcomes if o.task.id in new))
                self._held_back_logged |= new
        if stale:
            log.warning("discarded stale results ids=%s: another Calculator holds or finished "
                        "these tasks, or they were cancelled or deleted%s", format_ids(t.id for t in stale),
                        tracing.traces_of(stale))

    def _wait_and_collect(self) -> None:
        readers = [self._wake_read, *self.pool.connections()]
        if self.listen_conn is not None:
            readers.append(self.listen_conn)
        ready, _, _ = select.select(readers, [], [], self._wait_timeout())
        if self._wake_read in ready:
            os.read(self._wake_read, 512)
        if self.listen_conn is not None and self.listen_conn in ready:
            try:
                notifications = list(self.listen_conn.notifies(timeout=0))
                self.cancellation.note(notifications)
                for note in notifications:
                    if note.channel == TASKS_CHANNEL:
                        self.claims.frontier.heard(note.payload)
                if any(n.channel == TASKS_CHANNEL for n in notifications):
                    self.claims.expect_work()
            except psycopg.Error as error:
                self._lost_connection(error)
        self.unstored.extend(self.pool.collect(ready))
        self.unstored.extend(self.pool.enforce_timeouts(time.monotonic()))
        if self.pool.finished:
            self.unstored.extend(self.pool.finished)
            self.pool.finished.clear()
        if self.pool.crashed:
            self.to_release_counted.extend(self.pool.crashed)
            self.pool.crashed.clear()

    def _wait_timeout(self) -> float:
        now = time.monotonic()
        if self.work_conn is not None and self.statements.ready(now) \
                and (self.unstored or self.to_release or self.to_release_counted):
            return 0.0  # the next turn stores or releases them
        if self.stopping:
            # Short waits while handing back; children's answers wake us sooner.
            return 0.05
        # Only what the next turn can act on: a heartbeat that is due means
        # nothing while disconnected (or waiting to retry), nor a poll while
        # there is no room to claim; waking for them would spin the loop.
        if self.work_conn is None:
            wake_at = [self.next_reconnect]
        elif not self.statements.ready(now):
            wake_at = [self.statements.retry_at]
        else:
            wake_at = [self.next_lease_extension, self.next_heartbeat]
            if self.pool.fair.refresh_due(float("inf"), active=self.pool.held_count() > 0):
                wake_at.append(self.pool.fair.next_refresh)
            slot_retry = self.pool.cap.next_try()
            if slot_retry is not None:
                wake_at.append(slot_retry)
            if self.claims.room(now) > 0:
                wake_at.append(self.claims.next_poll)
            hand_back = self.pool.queue.next_overdue_at(self.pool.claim_size.hold)
            if hand_back is not None and not self.stopping:
                wake_at.append(hand_back)
            if self.held_back:
                wake_at.append(self.next_held_back_try)
            wake_at.append(self.retention.next_at)
            cancellation_check = self.cancellation.next_check(self.pool)
            if cancellation_check is not None:
                wake_at.append(cancellation_check)
        deadline = self.pool.next_deadline()
        if deadline is not None:
            wake_at.append(deadline)
        return max(0.0, min(wake_at) - now)
