"""Cancelling pending tasks.

    POST /api/result/<id>/cancel                 -> 200 the cancelled outcome
    POST /api/results/cancel   {"ids": [1, 2]}   -> 200 one entry per id

A POST to a "cancel" action rather than DELETE /api/result/<id>: nothing is
deleted (GET keeps answering, with "status": "cancelled"), the request may
fail because of the task's state (409 once it finished), and the same verb
serves the bulk form. Cancelling twice is harmless: a cancelled task answers
200 "cancelled" again. The rule lives in cancel_tasks()
(sql/007_retention_counts_cancel.sql), which psql users call too.
"""

from __future__ import annotations

import json
from decimal import Decimal

from flask import Blueprint, jsonify

from api.auth import caller
from api.db import connection
from api.errors import BadRequest
from api.expressions import MAX_BIGINT, SELECT_RETENTION, expired_message, missing, parse_expression_id
from api.request_body import batch, json_object

blueprint = Blueprint("cancel", __name__, url_prefix="/api")

# Another key's task is reported as unknown (or expired) and left alone (sql/010).
CANCEL = "SELECT id, status, cancelled_now FROM cancel_tasks(%s::bigint[], %s::bigint)"


@blueprint.post("/result/<expression_id>/cancel")
def cancel_one(expression_id: str):
    task_id = parse_expression_id(expression_id)
    with connection() as conn:
        _, status, _ = conn.execute(CANCEL, ([task_id], caller().only_owner)).fetchone()
    if status == "cancelled":
        return jsonify({"expression_id": task_id, "status": "cancelled"})
    if status in ("expired", "unknown"):
        raise missing(task_id)
    raise BadRequest(f"expression {task_id} already finished ({status}): it cannot be cancelled", 409)


@blueprint.post("/results/cancel")
def cancel_many():
    body = json_object(required={"ids"})
    ids = [_task_id(value) for value in batch(body, "ids", "ids")]
    with connection() as conn:
        rows = conn.execute(CANCEL, ([i for i in ids if i <= MAX_BIGINT], caller().only_owner)).fetchall()
        kept_for = (conn.execute(SELECT_RETENTION).fetchone()[1]
                    if any(row[1] == "expired" for row in rows) else None)
    known = {row[0]: row for row in rows}
    return jsonify({"results": [_entry(*known.get(i, (i, "unknown", False)), kept_for) for i in ids]})


def _task_id(value) -> int:
    """An id from the JSON body (numbers arrive as Decimal, as written). One
    past the largest bigint is a well-formed id that was never issued."""
    if isinstance(value, Decimal) and value.is_finite() and value.as_tuple().exponent == 0 \
            and len(value.as_tuple().digits) <= 30:
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        shown = str(value) if isinstance(value, Decimal) else json.dumps(value, default=str)
        raise BadRequest(f"an id must be a positive integer, not {shown[:40]}")
    return value


def _entry(task_id: int, status: str, cancelled_now: bool, kept_for) -> dict:
    entry = {"expression_id": task_id, "status": status, "cancelled": status == "cancelled"}
    if status in ("done", "error"):
        entry["msg"] = f"already finished ({status}): not cancelled"
    elif status == "expired":
        entry["msg"] = expired_message(task_id, kept_for)
    elif status == "unknown":
        entry["msg"] = f"no expression with id {task_id}"
    return entry
