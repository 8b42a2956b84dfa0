"""The API's database access: one connection pool per process, opened lazily
(after a gunicorn fork), and fast failure while PostgreSQL is unreachable.

While the database works, requests take pooled connections; one handed back
less than JUST_USED_SECONDS ago is used without a check (it worked a moment
ago), an older one is checked first.

When a connection breaks, a check fails or the pool cannot connect, the
database is marked down. While it is down a request does not queue for a
connection (that would cost DB_TIMEOUT each): it answers 503 at once, except
that at most one request every PROBE_SECONDS tries a fresh connection. When
that probe connects, the pool is replaced by a new one (the old one may be
backing off its reconnection attempts for many seconds) and requests flow
again: the service resumes within about PROBE_SECONDS of the database's
return, without a restart.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import weakref
from typing import Iterator

import psycopg
from flask import Flask, current_app
from psycopg_pool import ConnectionPool, PoolClosed, PoolTimeout

from core.database import connect, error_summary
from core.migrations import check_schema

log = logging.getLogger("api")

JUST_USED_SECONDS = 1.0
PROBE_SECONDS = 0.25
# A request asks the pool for a connection in slices of this long, so that
# it notices at once when another request found the database down.
GETCONN_SLICE_SECONDS = 0.2


class DatabaseUnavailable(RuntimeError):
    """PostgreSQL cannot be reached now (a 503, not a crash)."""


class _Pool(ConnectionPool):
    """A ConnectionPool that tells the Database when it cannot connect."""

    def __init__(self, *args, on_connect_failed, **kwargs):
        self._on_connect_failed = on_connect_failed
        super().__init__(*args, **kwargs)

    def _connect(self, timeout=None):
        try:
            return super()._connect(timeout)
        except psycopg.OperationalError as error:
            self._on_connect_failed(error)
            raise


class Database:
    def __init__(self, url: str, min_size: int, max_size: int, timeout: float,
                 prepared_statements: bool = True, pooler: str = "none"):
        self.url = url
        self.prepared_statements = prepared_statements
        # Behind a pooler in transaction mode, a pipeline carries one Sync.
        self.one_sync_per_round_trip = pooler != "none"
        self.min_size, self.max_size, self.timeout = min_size, max_size, timeout
        self.down_since: float | None = None
        self._last_probe = 0.0
        self._lock = threading.Lock()
        self._returned_at: "weakref.WeakKeyDictionary[psycopg.Connection, float]" = weakref.WeakKeyDictionary()
        self.pool = self._new_pool()

    def _new_pool(self) -> _Pool:
        timeout_ms = int(self.timeout * 1000)

        def configure(conn: psycopg.Connection) -> None:
            # Bounded statements: a request never waits on the database for longer.
            conn.execute("SELECT set_config('statement_timeout', %s, false)", (str(timeout_ms),))
            # We send the tasks_inserted NOTIFY ourselves, after each insert's
            # commit (see notify_tasks_inserted and sql/004_notify_after_commit.sql).
            conn.execute("SELECT set_config('calculator.notify_after_commit', 'on', false)")

        return _Pool(
            self.url,
            min_size=self.min_size,
            max_size=self.max_size,
            timeout=self.timeout,
            reset=self._note_returned,
            configure=configure,
            kwargs={
                "autocommit": True,
                "application_name": "calculator-api",
                "connect_timeout": max(1, round(self.timeout)),
                # None: no server-side prepared statements at all (behind PgBouncer).
                **({} if self.prepared_statements else {"prepare_threshold": None}),
            },
            open=False,
            name="calculator-api",
            on_connect_failed=self._mark_down,
        )

    # -- the pool's life ---------------------------------------------------

    def get_stats(self) -> dict:
        return self.pool.get_stats()

    def close(self) -> None:
        self.pool.close()

    def _note_returned(self, conn: psycopg.Connection) -> None:
        with self._lock:
            self._returned_at[conn] = time.monotonic()

    def _recently_used(self, conn: psycopg.Connection) -> bool:
        with self._lock:
            returned = self._returned_at.get(conn)
        return returned is not None and time.monotonic() - returned < JUST_USED_SECONDS

    # -- down and up -------------------------------------------------------

    def _mark_down(self, error: BaseException) -> None:
        with self._lock:
            if self.down_since is None:
                self.down_since = time.monotonic()
                self._last_probe = self.down_since
                log.warning("database unreachable (%s); answering 503 until a probe connects",
                            error_summary(error))

    def _probe(self) -> None:
        """While down: at most one fresh connection attempt per PROBE_SECONDS
        (by the request that comes first); everyone else gets 503 at once."""
        with self._lock:
            now = time.monotonic()
            if self.down_since is None:
                return
            if now - self._last_probe < PROBE_SECONDS:
                raise DatabaseUnavailable("database unreachable (probed %.2f s ago)"
                                          % (now - self._last_probe))
            self._last_probe = now
        try:
            connect(self.url, application_name="calculator-api-probe",
                    connect_timeout=min(self.timeout, 1)).close()
        except psycopg.OperationalError as error:
            raise DatabaseUnavailable(error_summary(error)) from error
        with self._lock:
            if self.down_since is None:
                return
            old, self.pool = self.pool, self._new_pool()
            log.info("database reachable again after %.1f s", time.monotonic() - self.down_since)
            self.down_since = None
        # The old pool may be sleeping in a reconnection backoff: let it go.
        threading.Thread(target=old.close, kwargs={"timeout": 1}, daemon=True).start()

    # -- connections -------------------------------------------------------

    @contextlib.contextmanager
    def connection(self) -> Iterator[psycopg.Connection]:
        """A working pooled connection, or DatabaseUnavailable."""
        pool, conn = self._getconn()
        try:
            yield conn
        except psycopg.OperationalError as error:
            if conn.broken or conn.closed:
                self._mark_down(error)
                raise DatabaseUnavailable(error_summary(error)) from error
            raise DatabaseUnavailable(error_summary(error)) from error  # e.g. statement timeout
        finally:
            pool.putconn(conn)

    def _getconn(self) -> tuple[_Pool, psycopg.Connection]:
        deadline = time.monotonic() + self.timeout
        while True:
            if self.down_since is not None:
                self._probe()
            pool = self.pool
            left = deadline - time.monotonic()
            try:
                if pool.closed:
                    with self._lock:
                        if pool is self.pool and pool.closed:
                            pool.open(wait=False)  # first use in this (forked) process
                conn = pool.getconn(timeout=max(0.01, min(GETCONN_SLICE_SECONDS, left)))
            except PoolClosed:
                if pool is self.pool:
                    raise DatabaseUnavailable("the connection pool is closed (shutting down)") from None
                continue  # replaced by a probe a moment ago: take the new one
            except PoolTimeout:
                if time.monotonic() >= deadline:
                    raise DatabaseUnavailable(f"no database connection free after {self.timeout:g} s") from None
                continue
            if self._recently_used(conn):
                return pool, conn
            try:
                conn.execute("")
                return pool, conn
            except psycopg.OperationalError as error:
                pool.putconn(conn)
                self._mark_down(error)
                # Perhaps only this connection died (PostgreSQL restarted):
                # the loop probes at once and serves if it connects.
                with self._lock:
                    self._last_probe = 0.0


def init_app(app: Flask) -> None:
    settings = app.config["SETTINGS"]
    app.extensions["pool"] = Database(app.config["DATABASE_URL"], settings.pool_min_size,
                                      settings.pool_max_size, settings.db_timeout,
                                      settings.prepared_statements, settings.pooler)
    if app.config["CHECK_SCHEMA"]:
        with connect(app.config["DATABASE_URL"], application_name="calculator-api") as conn:
            check_schema(conn)


# The payload: where the earliest task this session inserted since its last
# notification stands in the fair order ('' for none), kept by the insert
# trigger (sql/011): the Calculators' claims walk from there
# (worker/claim_frontier.py).
NOTIFY_TASKS_INSERTED = ("SELECT pg_notify('tasks_inserted', coalesce(current_setting('calculator.first_place', true), '')), "
                         "set_config('calculator.first_place', '', false)")


def notify_tasks_inserted(conn: psycopg.Connection) -> None:
    """Wake the Calculators for what this connection has just committed.
    A transaction of its own, so that the insert's commit did not hold the
    notification lock; if it fails, the task is found by the next poll."""
    try:
        conn.execute(NOTIFY_TASKS_INSERTED, prepare=True)
    except psycopg.Error as error:
        notify_failed(error)


def notify_failed(error: psycopg.Error) -> None:
    log.warning("could not notify the Calculators (%s); the fallback poll will find the task",
                error_summary(error))


def end_transaction(pipeline: psycopg.Pipeline) -> None:
    """In a pipeline, end the implicit transaction of what was sent so far
    without waiting for its results: the inserts and the NOTIFY after them
    then travel in one round trip (api/group_commit.py) and still commit separately (see
    notify_tasks_inserted). psycopg offers this only as Pipeline.sync(), which
    waits for the results (a round trip); its private _enqueue_sync() sends
    the Sync alone. Without it (another psycopg), sync() is still correct."""
    enqueue = getattr(pipeline, "_enqueue_sync", None)
    if enqueue is None:
        pipeline.sync()
    else:
        enqueue()


@contextlib.contextmanager
def connection() -> Iterator[psycopg.Connection]:
    """A pooled connection; database failures become DatabaseUnavailable."""
    with current_app.extensions["pool"].connection() as conn:
        yield conn
