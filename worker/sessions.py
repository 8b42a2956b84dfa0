"""The Calculator's two database sessions (worker/calculator.py inherits
this): one only LISTENs, the other runs the queue statements. Connecting at
start (retrying with backoff until the database is there), losing the
connection (logged once per cause, reconnecting with backoff while the loop
keeps evaluating what it holds), and the outage's end, which is when
statements work again, not when a connection opens.
"""

from __future__ import annotations

import logging
import time

import psycopg

from core.database import connect, error_summary
from core.migrations import check_schema
from worker.cancellation import CHANNEL as CANCELLED_CHANNEL
from worker.task_queue import TASKS_CHANNEL

log = logging.getLogger("calculator")

BACKOFF_FIRST = 0.05
BACKOFF_MAX = 1.0  # reconnect attempts are cheap; catching up quickly is not

# Errors after which the session itself is suspect: reconnect (maybe to the
# new primary) rather than retry on it.
RECONNECT_ERRORS = (psycopg.errors.ConnectionException, psycopg.errors.AdminShutdown,
                    psycopg.errors.CrashShutdown, psycopg.errors.CannotConnectNow,
                    psycopg.errors.ReadOnlySqlTransaction, psycopg.errors.InFailedSqlTransaction,
                    psycopg.errors.IdleInTransactionSessionTimeout)


class DatabaseSessions:
    def _connect(self) -> None:
        """Both connections, or neither (nothing is left open on a failure)."""
        keepalives = self.settings.keepalive_parameters()
        session = self.settings.session_settings()
        work = listen = None
        try:
            work = connect(self.url, application_name="calculator", **keepalives)
            work.execute("SELECT " + ", ".join(["set_config(%s, %s, false)"] * len(session)),
                         [part for item in session.items() for part in item])
            listen = connect(self.url, application_name="calculator-listen", **keepalives)
            listen.execute(f"LISTEN {TASKS_CHANNEL}")
            listen.execute(f"LISTEN {CANCELLED_CHANNEL}")
        except BaseException:
            for conn in (work, listen):
                if conn is not None:
                    conn.close()
            raise
        self.work_conn, self.listen_conn = work, listen
        # Anything inserted or handed back while we were not listening is
        # found by one poll, walking the queue from its head.
        self.claims.expect_work()
        self.claims.frontier.lower(None)
        self.next_heartbeat = 0.0

    def _connect_at_start(self) -> None:
        delay = BACKOFF_FIRST
        while True:
            try:
                self._connect()
                check_schema(self.work_conn)  # SchemaError: a deliberate exit
                return
            except psycopg.Error as error:
                self._disconnect()
                if delay == BACKOFF_FIRST:
                    log.error("cannot connect to the database (%s); retrying with backoff",
                              error_summary(error))
                time.sleep(delay)
                delay = min(delay * 2, BACKOFF_MAX)

    def _deregister(self) -> None:
        if self.work_conn is not None:
            try:
                self.registration.deregister(self.work_conn)
            except psycopg.Error:
                pass  # its heartbeat expires instead

    def _disconnect(self) -> None:
        for conn in (self.listen_conn, self.work_conn):
            if conn is not None:
                conn.close()
        self.listen_conn = self.work_conn = None
        self.pool.cap.lost()  # the work session's running slots ended with it

    def _lost_connection(self, error: Exception) -> None:
        self._disconnect()
        reason = error_summary(error)
        if self.outage_since is None:
            self.outage_since = time.monotonic()
            log.error("database connection lost (%s); evaluating what is held and "
                      "reconnecting with backoff", reason)
        elif reason != self._outage_reason:  # once per cause, not once per try
            log.error("database still unavailable, now: %s", reason)
        self._outage_reason = reason
        self.next_reconnect = time.monotonic() + self.backoff
        self.backoff = min(self.backoff * 2, BACKOFF_MAX)

    def _reconnect(self) -> None:
        try:
            self._connect()
        except psycopg.Error as error:
            self._lost_connection(error)
        # The outage ends when statements work again, not when a connection
        # opens (a read-only server accepts connections, then refuses writes).

    def _restored(self) -> None:
        log.info("database connection restored after %.1f s", time.monotonic() - self.outage_since)
        self.outage_since = None
        self.backoff = BACKOFF_FIRST
