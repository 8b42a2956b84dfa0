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
from core.settings import ExpressionLimits
from worker.claim_frontier import HEAD
from worker.intake import MAX_VARIABLES_CHARS, checked_row, decode_variables

TASKS_CHANNEL = "tasks_inserted"


@dataclass(eq=False)
class Task:
    id: int
    expression: Any
    variables: Any
    lease_token: UUID
    # Fair claiming (sql/010): the key that submitted it (None: nobody) and
    # its place in the fair order.
    owner: int | None = None
    fair_round: int = 0
    # Why this row cannot be calculated (it becomes its error outcome), found
    # when the claimed row was read; None for a row to calculate.
    problem: str | None = None
    # When this Calculator queued it first (time.monotonic()): a task waiting
    # unstarted longer than the hold time is handed back (worker/fair_queue.py).
    queued_at: float | None = None
    # Which claim of the task this is (1: the first; more: a retry), and the
    # W3C traceparent stored with it (sql/015), if any: worker/tracing.py.
    attempt: int = 1
    trace_context: str | None = None
    # That traceparent read once, for the task's spans (worker/tracing.py).
    trace_parent: Any = None


@dataclass(eq=False)
class Outcome:
    task: Task
    result: str | None  # JSON text of the result, or None with an error
    error: str | None


class GivenUp(list):
    """The ids a claim gave up on; trace_contexts: {id: traceparent} of
    those that have one."""

    def __init__(self, ids=(), trace_contexts=None):
        super().__init__(ids)
        self.trace_contexts = trace_contexts or {}

    def merge(self, other: "GivenUp") -> None:
        self.extend(other)
        self.trace_contexts.update(other.trace_contexts)


def claim_tasks(conn: psycopg.Connection, limit: int, lease_seconds: float,
                max_attempts: int, limits: ExpressionLimits = ExpressionLimits(),
                after: tuple[int, int] | None = HEAD, skip: frozenset = frozenset()) -> tuple[list[Task], GivenUp]:
    """Claim up to limit tasks placed past after, (place, id) in the fair
    order, or from the queue's head with after None (worker/claim_frontier.py);
    also returns the ids given up on (see the SQL). The tasks of the
    tenants in skip (owners; None: rows without an owner) are passed over.

    Each row is decoded and checked on its own (worker/intake.py): a row that
    cannot be calculated comes back as a Task with its problem set."""
    rows = conn.execute(
        load_query("claim_tasks"),
        {"limit": limit, "lease_seconds": lease_seconds, "max_attempts": max_attempts,
         "max_expression_length": limits.max_expression_length,
         "max_variables_chars": MAX_VARIABLES_CHARS,
         "after_place": after[0] if after else None, "after_id": after[1] if after else None,
         "skip": sorted(0 if tenant is None else tenant for tenant in skip)},
        prepare=True,
    ).fetchall()
    claimed = [_read_row(*row[:5], *row[6:], limits) for row in rows if not row[5]]
    given_up = GivenUp((row[0] for row in rows if row[5]),
                       {row[0]: row[9] for row in rows if row[5] and row[9] is not None})
    return claimed, given_up


def reset_queue_head(conn: psycopg.Connection) -> None:
    """Set the queue's low-water mark to its oldest pending task, found from
    the index's very head (sql/011: reset_queue_head())."""
    conn.execute("SELECT reset_queue_head()", prepare=True)


def _read_row(task_id, expression, length, variables_text, token, owner, fair_round, attempt,
              trace_context, negative_zeros, limits) -> Task:
    variables, problem = decode_variables(variables_text)
    if problem is None:
        variables, problem = checked_row(expression, length, variables, limits, negative_zeros)
    return Task(task_id, expression, variables, token, owner, fair_round, problem,
                attempt=attempt, trace_context=trace_context)


def store_results(conn: psycopg.Connection, outcomes: list[Outcome]) -> set[int]:
    """Store outcomes whose claim still holds; returns the ids stored."""
    return store_outcomes(conn, outcomes)[0]


def store_outcomes(conn: psycopg.Connection, outcomes: list[Outcome], *,
                   skip_locked: bool = False) -> tuple[set[int], set[int]]:
    """Store outcomes whose claim still holds: (ids stored, ids whose row
    another session holds locked: still ours, to be stored later).

    A locked row makes the plain store wait up to lock_timeout; then (or at
    once with skip_locked, for outcomes known to be held back) the batch is
    stored passing over locked rows."""
    params = {
        "ids": [o.task.id for o in outcomes],
        "tokens": [o.task.lease_token for o in outcomes],
        "results": [o.result for o in outcomes],
        "errors": [o.error for o in outcomes],
    }
    query = "store_results_skip_locked" if skip_locked else "store_results"
    try:
        rows = conn.execute(load_query(query), params, prepare=True).fetchall()
    except psycopg.errors.LockNotAvailable:
        if skip_locked:
            raise  # a lock on the table, not on rows: a failed statement
        return store_outcomes(conn, outcomes, skip_locked=True)
    stored = {row[0] for row in rows}
    missed = [o.task for o in outcomes if o.task.id not in stored]
    if not (missed and skip_locked):  # without skip_locked, nothing was passed over
        return stored, set()
    rows = conn.execute(load_query("still_claimed"), {
        "ids": [t.id for t in missed], "tokens": [t.lease_token for t in missed]}).fetchall()
    return stored, {row[0] for row in rows}


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
