"""Connections to PostgreSQL and the SQL files the code runs."""

from __future__ import annotations

import functools
from pathlib import Path

import psycopg

SQL_DIR = Path(__file__).resolve().parent.parent / "sql"

# Bounded waits everywhere: no request or Calculator hangs for libpq's default
# (forever) when the server is gone.
CONNECT_TIMEOUT_SECONDS = 5


@functools.cache
def load_query(name: str) -> str:
    """The text of sql/queries/<name>.sql."""
    return (SQL_DIR / "queries" / f"{name}.sql").read_text()


def error_summary(error: BaseException) -> str:
    """The first line of a driver error, for a one-line log entry."""
    lines = [line for line in str(error).strip().splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__


def connect(url: str, *, application_name: str, autocommit: bool = True,
            connect_timeout: float = CONNECT_TIMEOUT_SECONDS,
            **parameters) -> psycopg.Connection:
    """One connection; an empty url means libpq's PG* environment variables.
    parameters: further libpq connection parameters (keepalives, ...)."""
    return psycopg.connect(
        url,
        autocommit=autocommit,
        application_name=application_name,
        connect_timeout=max(1, round(connect_timeout)),
        **parameters,
    )
