"""Submitting under the per-key limits.

The rule lives in admit_submission() (sql/010_api_keys_and_fair_claiming.sql),
called by the INSERT it admits: a refusal inserts nothing (a bulk
submission is all or nothing) and comes back as a row saying why, and the
limits hold across any number of API processes because PostgreSQL keeps
them. This module picks the INSERT, passes the settings, reads the ids and
turns a refusal into a 429 with Retry-After.

Without an owner and without limits (AUTH=off, nothing set) the INSERT is the
plain one of before keys existed.
"""

from __future__ import annotations

import math

import psycopg
from flask import current_app

from api.auth import Caller
from api.errors import BadRequest
from core.database import load_query



class Refused(Exception):
    """admit_submission() refused: kind 'rate' (detail: seconds to wait) or
    'pending' (detail: the key's unfinished tasks)."""

    def __init__(self, kind: str, detail: float):
        super().__init__(kind)
        self.kind, self.detail = kind, detail


# trace_context: the request's traceparent when the API traces (api/tracing.py), else NULL.
# Variables that are -0.0 are named in variables_negative_zero (sql/016: jsonb
# keeps them as 0.0), from the JSON text (sql/019: variables_negative_zero_of).
INSERT_TASK = ("INSERT INTO tasks (expression, variables, variables_negative_zero, trace_context) "
               "VALUES (%(expression)s, %(variables)s::text::jsonb, "
               "variables_negative_zero_of(%(variables)s::text), "
               "%(trace_context)s::text) RETURNING id")
# One statement, one NOTIFY, however many items (each with its submission's
# trace context: a group commit's INSERT holds several submissions). Ids come from the sequence
# in the order the rows are inserted, which is the items' order (ORDER BY
# ordinality), so sorting the returned ids gives the items' ids in order.
INSERT_TASKS = """
    INSERT INTO tasks (expression, variables, variables_negative_zero, trace_context)
    SELECT item.expression, item.variables::jsonb,
           variables_negative_zero_of(item.variables), item.trace_context
    FROM unnest(%(expressions)s::text[], %(variables)s::text[], %(trace_contexts)s::text[])
        WITH ORDINALITY AS item(expression, variables, trace_context, position)
    ORDER BY item.position
    RETURNING id
"""


def _admitted(caller: Caller) -> bool:
    return caller.owner is not None or current_app.config["SETTINGS"].key_limits.any


def limit_parameters(caller: Caller, items: int) -> dict | None:
    """The parameters of the admitted INSERT's limits for this caller, or
    None when the plain INSERT applies (no owner, no limits)."""
    return _limit_parameters(caller, items) if _admitted(caller) else None


def insert_many(conn: psycopg.Connection, caller: Caller, items: list[tuple[str, str]],
                trace_context: str | None = None) -> psycopg.Cursor:
    """Send the INSERT of several tasks; returns its cursor (their ids, in some order)."""
    params = {"expressions": [e for e, _ in items], "variables": [v for _, v in items]}
    if _admitted(caller):
        return conn.execute(load_query("insert_tasks_admitted"),
                            params | {"trace_context": trace_context} | _limit_parameters(caller, len(items)))
    return conn.execute(INSERT_TASKS, params | {"trace_contexts": [trace_context] * len(items)})


def inserted_ids(cursor: psycopg.Cursor) -> list[int]:
    """The ids an INSERT above created, in the items' order; Refused if
    admit_submission() refused it (then nothing was inserted)."""
    rows = cursor.fetchall()
    if len(rows) == 1 and len(rows[0]) == 3 and rows[0][1] is not None:
        raise Refused(rows[0][1], rows[0][2])
    return sorted(row[0] for row in rows)


def check_fits(items: int) -> None:
    """A submission larger than the unfinished-task limit can never pass: a
    400, not a 429 to retry."""
    limit = current_app.config["SETTINGS"].key_limits.max_pending
    if limit and items > limit:
        raise BadRequest(f"{items} expressions can never be accepted at once: a key may have at most "
                         f"{limit} unfinished tasks (MAX_PENDING_PER_KEY); send at most {limit} at a time")


def _limit_parameters(caller: Caller, items: int) -> dict:
    limits = current_app.config["SETTINGS"].key_limits
    return {"owner": caller.owner, "items": items, "max_pending": limits.max_pending,
            "request_rate": limits.requests_per_second, "request_burst": limits.request_burst,
            "item_rate": limits.items_per_second, "item_burst": limits.item_burst}


def refusal(refused: Refused, caller: Caller, items: int) -> BadRequest:
    """The 429 for a submission admit_submission() refused."""
    limits = current_app.config["SETTINGS"].key_limits
    who = f"key {caller.name!r}" if caller.name else "this service (all clients together)"
    if refused.kind == "rate":
        allowed = []
        if limits.requests_per_second:
            allowed.append(f"{limits.requests_per_second:g} requests")
        if limits.items_per_second:
            allowed.append(f"{limits.items_per_second:g} items")
        msg = (f"rate limit: {who} may submit {' and '.join(allowed)} per second "
               f"(bursts of {limits.burst_seconds:g} s); this request needs {refused.detail:.2f} s more. "
               "Nothing was submitted")
        retry_after = max(1, math.ceil(refused.detail))
    else:
        pending = int(refused.detail)
        has = (f"has {limits.max_pending} unfinished tasks or more" if pending >= limits.max_pending
               else f"has {pending} unfinished tasks")
        msg = (f"too many unfinished tasks: {who} {has}, at most {limits.max_pending} may wait at once, "
               f"and this request adds {items}. Nothing was submitted; wait for results or cancel some")
        retry_after = 1
    return BadRequest(msg, 429, [("Retry-After", str(retry_after))])
