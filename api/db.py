"""The API's connection pool: one per process, opened lazily (after a
gunicorn fork), with a check that replaces a dead connection before a request
gets it, so the API recovers by itself when PostgreSQL comes back."""

from __future__ import annotations

import contextlib
from typing import Iterator

import psycopg
from flask import Flask, current_app
from psycopg_pool import ConnectionPool, PoolTimeout

from core.database import connect
from core.migrations import check_schema


class DatabaseUnavailable(RuntimeError):
    """PostgreSQL cannot be reached now (a 503, not a crash)."""


def init_app(app: Flask) -> None:
    settings = app.config["SETTINGS"]
    timeout_ms = int(settings.db_timeout * 1000)

    def configure(conn: psycopg.Connection) -> None:
        # Bounded statements: a request never waits on the database for longer.
        conn.execute("SELECT set_config('statement_timeout', %s, false)", (str(timeout_ms),))

    app.extensions["pool"] = ConnectionPool(
        app.config["DATABASE_URL"],
        min_size=settings.pool_min_size,
        max_size=settings.pool_max_size,
        timeout=settings.db_timeout,
        check=ConnectionPool.check_connection,
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
