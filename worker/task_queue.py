"""The queue's operations, each one SQL statement from sql/queries/.

The guarantees live in the SQL: SKIP LOCKED claiming, leases, the fencing
token and "exactly one outcome" are all decided by the database, so that
they hold for any number of Calculators on any number of machines.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable
from uuid import UUID

import psycopg

from core.database import load_query

TASKS_CHANNEL = "tasks_inserted"


@dataclass(eq=False)
class Task:
    id: int
    expression: Any
    variables: Any
    lease_token: UUID


@dataclass(eq=False)
class Outcome:
    task: Task
    result: str | None  # JSON text of the result, or None with an error
    error: str | None


def claim_tasks(conn: psycopg.Connection, limit: int, lease_seconds: float,
                max_attempts: int) -> tuple[list[Task], list[int]]:
    """Claim up to limit tasks; also returns the ids given up on (see the SQL)."""
    rows = conn.execute(
        load_query("claim_tasks"),
        {"limit": limit, "lease_seconds": lease_seconds, "max_attempts": max_attempts},
        prepare=True,
    ).fetchall()
    claimed = [Task(id, expression, variables, token)
               for id, expression, variables, token, given_up in rows if not given_up]
    given_up = [row[0] for row in rows if row[4]]
    return claimed, given_up


def store_results(conn: psycopg.Connection, outcomes: list[Outcome]) -> set[int]:
    """Store outcomes whose claim still holds; returns the ids stored."""
    rows = conn.execute(load_query("store_results"), {
        "ids": [o.task.id for o in outcomes],
        "tokens": [o.task.lease_token for o in outcomes],
        "results": [o.result for o in outcomes],
        "errors": [o.error for o in outcomes],
    }, prepare=True).fetchall()
    return {row[0] for row in rows}


def extend_leases(conn: psycopg.Connection, tasks: Iterable[Task], lease_seconds: float) -> None:
    tasks = list(tasks)
    conn.execute(load_query("extend_leases"), {
        "ids": [t.id for t in tasks],
        "tokens": [t.lease_token for t in tasks],
        "lease_seconds": lease_seconds,
    })


def release_tasks(conn: psycopg.Connection, tasks: Iterable[Task], *, count_attempt: bool) -> set[int]:
    """Make claimed tasks claimable again now; returns the ids released."""
    tasks = list(tasks)
    rows = conn.execute(load_query("release_tasks"), {
        "ids": [t.id for t in tasks],
        "tokens": [t.lease_token for t in tasks],
        "refund": 0 if count_attempt else 1,
    }).fetchall()
    return {row[0] for row in rows}
