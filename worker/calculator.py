"""The Calculator's main loop: LISTEN, claim, evaluate, store.

One thread, one select() over the LISTEN connection, the evaluation
processes' pipes and a signal wake-up pipe:

    wait ─► a notification, a result, a deadline or a signal
     ▲      │
     │      ▼
     └── store outcomes, release what must go back, claim when there is room
         and a reason (a notification, a full last batch, or the fallback
         poll every QUEUE_WAIT_TIME), hand tasks to idle children

Two connections: one only LISTENs (so a notification is seen the moment it
arrives, whatever the other is doing), the other runs the queue statements.
When the database goes away the loop keeps evaluating what it holds, keeps
the outcomes, reconnects with backoff, and on reconnecting stores them and
polls once to catch up with what was inserted meanwhile.
"""

from __future__ import annotations

import logging
import os
import select
import signal
import time

import psycopg

from core.database import connect, error_summary
from core.logs import format_ids
from core.migrations import check_schema
from core.settings import CalculatorSettings
from worker.cancellation import CHANNEL as CANCELLED_CHANNEL, Cancellation
from worker.evaluators import EvaluatorPool
from worker.metrics import METRICS
from worker.registry import HEARTBEAT_SECONDS, Registration
from worker.retention import Retention
from worker.task_queue import (TASKS_CHANNEL, Outcome, Task, claim_tasks, extend_leases,
                               release_tasks, store_results)

log = logging.getLogger("calculator")

BACKOFF_FIRST = 0.05
BACKOFF_MAX = 1.0  # reconnect attempts are cheap; catching up quickly is not
SHUTDOWN_GRACE = 3.0  # seconds beyond CALCULATION_TIMEOUT to hand back what is held


class Calculator:
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
        self.to_release: list[Task] = []          # handed back, attempt not counted
        self.to_release_counted: list[Task] = []  # their child died: attempt counted

        self.work_expected = True  # a notification came, or the last claim was full
        self.next_poll = 0.0
        self.next_lease_extension = 0.0

        self.outage_since: float | None = None
        self.next_reconnect = 0.0
        self.backoff = BACKOFF_FIRST

        self.stopping = False
        self.stop_deadline = 0.0
        self._wake_read, self._wake_write = os.pipe()

    # --- life cycle ---------------------------------------------------------

    def run(self) -> int:
        self._connect_at_start()
        check_schema(self.work_conn)
        self.pool.start()
        self._install_signal_handlers()
        log.info("calculator started %s", self.settings.describe())
        try:
            while not self._finished():
                self._step()
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
        settled = not (self.pool.held_count() or self.unstored
                       or self.to_release or self.to_release_counted)
        if settled:
            return True
        if time.monotonic() >= self.stop_deadline:
            left = [t.id for t in self.pool.held_tasks()] + [o.task.id for o in self.unstored]
            log.warning("stopping with work not handed back ids=%s: their leases will expire",
                        format_ids(left))
            return True
        return False

    # --- one turn of the loop -----------------------------------------------

    def _step(self) -> None:
        if self.stopping:
            self.pool.finish_current_only()
            self.to_release.extend(self.pool.take_queued())
        if self.work_conn is None and time.monotonic() >= self.next_reconnect:
            self._reconnect()
        if self.work_conn is not None:
            try:
                self._database_work()
            except psycopg.OperationalError as error:
                self._lost_connection(error)
        self.pool.dispatch()
        self._wait_and_collect()

    def _database_work(self) -> None:
        conn = self.work_conn
        self.unstored = self.cancellation.check(conn, self.pool, self.unstored)
        if self.unstored:
            outcomes, self.unstored = self.unstored, []
            try:
                self._store(conn, outcomes)
            except psycopg.OperationalError:
                self.unstored = outcomes + self.unstored
                raise
        for pending, count_attempt in ((self.to_release, False), (self.to_release_counted, True)):
            if pending:
                released = release_tasks(conn, pending, count_attempt=count_attempt)
                log.info("released ids=%s%s", format_ids(released),
                         " (their evaluation process died)" if count_attempt else "")
                pending.clear()
        now = time.monotonic()
        if now >= self.next_heartbeat:
            self.registration.heartbeat(conn)
            self.next_heartbeat = now + HEARTBEAT_SECONDS
        if now >= self.next_lease_extension:
            held = self.pool.held_tasks() + [o.task for o in self.unstored]
            if held:
                extend_leases(conn, held, self.settings.lease_seconds)
            self.next_lease_extension = now + self.settings.lease_seconds / 3
        if not self.stopping:
            self._maybe_claim(conn, now)
            self.retention.maybe_run(conn, now)

    def _store(self, conn: psycopg.Connection, outcomes: list[Outcome]) -> None:
        stored = store_results(conn, outcomes)
        stale = [o.task.id for o in outcomes if o.task.id not in stored]
        METRICS.count("results_stored", len(stored))
        METRICS.count("stale_results_discarded", len(stale))
        if stored:
            log.info("stored ids=%s", format_ids(stored))
        if stale:
            log.warning("discarded stale results ids=%s: another Calculator holds or finished "
                        "these tasks", format_ids(stale))

    def _maybe_claim(self, conn: psycopg.Connection, now: float) -> None:
        held = self.pool.held_count()
        room = self.settings.task_num - held
        # Claim the next batch while the current one is still being evaluated,
        # but not one task at a time as each result comes back.
        if room <= 0 or held > self.settings.task_num // 2:
            return
        if not (self.work_expected or now >= self.next_poll):
            return
        tasks, given_up = claim_tasks(conn, room, self.settings.lease_seconds,
                                      self.settings.max_attempts)
        self.next_poll = now + self.settings.queue_wait_time
        self.work_expected = len(tasks) + len(given_up) >= room
        METRICS.count("tasks_given_up", len(given_up))
        if tasks:
            METRICS.claimed(len(tasks))
        if given_up:
            log.warning("gave up on ids=%s after %d attempts", format_ids(given_up),
                        self.settings.max_attempts)
        if tasks:
            log.info("claimed ids=%s", format_ids(t.id for t in tasks))
            self.pool.submit(tasks)

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
                if any(n.channel == TASKS_CHANNEL for n in notifications):
                    self.work_expected = True
            except psycopg.OperationalError as error:
                self._lost_connection(error)
        self.unstored.extend(self.pool.collect(ready))
        self.unstored.extend(self.pool.enforce_timeouts(time.monotonic()))
        if self.pool.crashed:
            self.to_release_counted.extend(self.pool.crashed)
            self.pool.crashed.clear()

    def _wait_timeout(self) -> float:
        now = time.monotonic()
        if self.work_conn is not None and (self.unstored or self.to_release or self.to_release_counted):
            return 0.0  # the next turn stores or releases them
        if self.stopping:
            # Short waits while handing back; children's answers wake us sooner.
            return 0.05
        wake_at = [self.next_lease_extension, self.next_heartbeat]
        if self.work_conn is None:
            wake_at.append(self.next_reconnect)
        else:
            wake_at.append(self.next_poll)
            wake_at.append(self.retention.next_at)
            cancellation_check = self.cancellation.next_check(self.pool)
            if cancellation_check is not None:
                wake_at.append(cancellation_check)
        deadline = self.pool.next_deadline()
        if deadline is not None:
            wake_at.append(deadline)
        return max(0.0, min(wake_at) - now)

    # --- connections --------------------------------------------------------

    def _connect(self) -> None:
        self.work_conn = connect(self.url, application_name="calculator", exact_numbers=True)
        self.work_conn.execute("SELECT set_config('synchronous_commit', %s, false)",
                               (self.settings.synchronous_commit,))
        self.listen_conn = connect(self.url, application_name="calculator-listen")
        self.listen_conn.execute(f"LISTEN {TASKS_CHANNEL}")
        self.listen_conn.execute(f"LISTEN {CANCELLED_CHANNEL}")
        # Anything inserted while we were not listening is found by one poll.
        self.work_expected = True
        self.next_heartbeat = 0.0

    def _connect_at_start(self) -> None:
        delay = BACKOFF_FIRST
        while True:
            try:
                self._connect()
                return
            except psycopg.OperationalError as error:
                if delay == BACKOFF_FIRST:
                    log.error("cannot connect to the database (%s); retrying with backoff",
                              error_summary(error))
                time.sleep(delay)
                delay = min(delay * 2, BACKOFF_MAX)

    def _deregister(self) -> None:
        if self.work_conn is not None:
            try:
                self.registration.deregister(self.work_conn)
            except psycopg.OperationalError:
                pass  # its heartbeat expires instead

    def _disconnect(self) -> None:
        for conn in (self.listen_conn, self.work_conn):
            if conn is not None:
                conn.close()
        self.listen_conn = self.work_conn = None

    def _lost_connection(self, error: Exception) -> None:
        self._disconnect()
        if self.outage_since is None:
            self.outage_since = time.monotonic()
            log.error("database connection lost (%s); evaluating what is held and "
                      "reconnecting with backoff", error_summary(error))
        self.next_reconnect = time.monotonic() + self.backoff
        self.backoff = min(self.backoff * 2, BACKOFF_MAX)

    def _reconnect(self) -> None:
        try:
            self._connect()
        except psycopg.OperationalError as error:
            self._lost_connection(error)
            return
        log.info("database connection restored after %.1f s", time.monotonic() - self.outage_since)
        self.outage_since = None
        self.backoff = BACKOFF_FIRST
