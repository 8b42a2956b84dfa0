"""The API's connection pool: one per process, opened lazily (after a
gunicorn fork), with a check that replaces a dead connection before a request
gets it, so the API recovers by itself when PostgreSQL comes back."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import weakref
from typing import Iterator

import psycopg
from flask import Flask, current_app
from psycopg_pool import ConnectionPool, PoolTimeout

from core.database import connect, error_summary
from core.migrations import check_schema

log = logging.getLogger("api")


class DatabaseUnavailable(RuntimeError):
    """PostgreSQL cannot be reached now (a 503, not a crash)."""


def init_app(app: Flask) -> None:
    settings = app.config["SETTINGS"]
    timeout_ms = int(settings.db_timeout * 1000)

    def configure(conn: psycopg.Connection) -> None:
        # Bounded statements: a request never waits on the database for longer.
        conn.execute("SELECT set_config('statement_timeout', %s, false)", (str(timeout_ms),))
        # We send the tasks_inserted NOTIFY ourselves, after each insert's
        # commit (see notify_tasks_inserted and sql/004_notify_after_commit.sql).
        conn.execute("SELECT set_config('calculator.notify_after_commit', 'on', false)")

    app.extensions["pool"] = ConnectionPool(
        app.config["DATABASE_URL"],
        min_size=settings.pool_min_size,
        max_size=settings.pool_max_size,
        timeout=settings.db_timeout,
        check=_check_unless_just_used,
        reset=_note_returned,
        configure=configure,
        kwargs={
            "autocommit": True,
            "application_name": "calculator-api",
            "connect_timeout": max(1, round(settings.db_timeout)),
        },
        open=False,
        name="calculator-api",
    )
    if app.config["CHECK_SCHEMA"]:
        with connect(app.config["DATABASE_URL"], application_name="calculator-api") as conn:
            check_schema(conn)


# A connection handed back less than this long ago worked a moment ago: the
# check (one round trip, a quarter of a submission's) is skipped for it. One
# that broke in use is discarded by the pool when it comes back, and one that
# broke since is found by the request, which answers 503 once.
JUST_USED_SECONDS = 1.0
_returned_at: "weakref.WeakKeyDictionary[psycopg.Connection, float]" = weakref.WeakKeyDictionary()
_returned_lock = threading.Lock()


def _note_returned(conn: psycopg.Connection) -> None:
    with _returned_lock:
        _returned_at[conn] = time.monotonic()


def _check_unless_just_used(conn: psycopg.Connection) -> None:
    with _returned_lock:
        returned = _returned_at.get(conn)
    if returned is None or time.monotonic() - returned >= JUST_USED_SECONDS:
        ConnectionPool.check_connection(conn)


def notify_tasks_inserted(conn: psycopg.Connection) -> None:
    """Wake the Calculators for what this connection has just committed.
    A transaction of its own, so that the insert's commit did not hold the
    notification lock; if it fails, the task is found by the next poll."""
    try:
        conn.execute("SELECT pg_notify('tasks_inserted', '')", prepare=True)
    except psycopg.Error as error:
        log.warning("could not notify the Calculators (%s); the fallback poll will find the task",
                    error_summary(error))


def get_pool() -> ConnectionPool:
    pool = current_app.extensions["pool"]
    if pool.closed:
        pool.open(wait=False)
    return pool


@contextlib.contextmanager
def connection() -> Iterator[psycopg.Connection]:
    """A pooled connection; database failures become DatabaseUnavailable."""
    try:
        with get_pool().connection() as conn:
            yield conn
    except (PoolTimeout, psycopg.OperationalError) as error:
        raise DatabaseUnavailable(str(error)) from error
