"""Submitting expressions and reading their outcomes.

    POST /api/expression          one expression            -> 202 {"expression_id"}
    POST /api/expressions         {"items": [...]}          -> 202 {"expression_ids"}
    GET  /api/result/<id>[?wait=S]                          -> the outcome
    GET  /api/results?ids=1,2,3[&wait=S]                    -> many outcomes
"""

from __future__ import annotations

import re

from flask import Blueprint, current_app, jsonify, request

from api import admission, tracing
from api.auth import caller
from api.db import connection, notify_tasks_inserted
from api.group_commit import Member
from api.errors import BadRequest
from api.idempotency import idempotency_key, submit_once
from api.request_body import batch, json_object
from api.result_waiter import wait_for_outcome, wait_for_outcomes
from core.parse_cache import ParseCache
from core.expression import (ExpressionError, check_variable_names, check_variables,
                             compile_expression, json_type, variables_to_json)

blueprint = Blueprint("expressions", __name__, url_prefix="/api")

# A task the caller may not see (another key's) is read as absent: the same
# 404 (or 410) as an id that does not exist, so nothing tells them apart.
# %(only)s: the caller's key id, NULL for callers who see every task.
# The result as json with its sign (sql/016: a -0.0 is 0.0 in jsonb, with
# result_negative_zero set).
SELECT_OUTCOME = ("SELECT status, signed_result(result, result_negative_zero), error FROM tasks "
                  "WHERE id = %(id)s AND (%(only)s::bigint IS NULL OR owner = %(only)s::bigint)")
SELECT_OUTCOMES = ("SELECT id, status, signed_result(result, result_negative_zero), error FROM tasks "
                   "WHERE id = ANY(%(ids)s) AND (%(only)s::bigint IS NULL OR owner = %(only)s::bigint)")
# An id not in tasks: deleted by retention (410) or never issued (404).
SELECT_RETENTION = "SELECT purged_through, kept_for FROM task_retention"
MAX_BIGINT = 2**63 - 1
# Bounded in bytes (core/parse_cache.py): at most this much per API process.
_CHECKED = ParseCache(8 * 1024 * 1024)
IDS = re.compile(r"0*[1-9][0-9]*(,0*[1-9][0-9]*)*")  # as api/openapi.json says


def checked_submission(item) -> tuple[str, str]:
    """(expression, variables as JSON) of a valid submission, else ExpressionError."""
    limits = current_app.config["SETTINGS"].limits
    variables = item.get("variables", {})
    # Names first: with a variable named sin, "sin*2" is about the name.
    check_variable_names(variables, limits.max_variables)
    compiled = _compiled(item["expression"], limits.max_expression_length)
    variables = check_variables(compiled, variables, limits.max_variables)
    return item["expression"], variables_to_json(variables)


def _compiled(text, max_length: int):
    """compile_expression, once per distinct expression in this process (the
    parse was a fifth of a POST's CPU, BENCHMARKS.md "Where a request's CPU goes")."""
    if not isinstance(text, str):
        return compile_expression(text, max_length)  # its 400 says what it is instead
    compiled, error = _CHECKED.get(text, max_length)
    if error is not None:
        raise ExpressionError(error)
    return compiled


def _store(body: dict, accepted: list[tuple[str, str]]) -> tuple[list[int], bool]:
    """Insert the accepted items at most once per Idempotency-Key: (ids, in
    the items' order; created). Without a key the submission joins this
    process's group commit (api/group_commit.py); with one it has its own
    transaction. A submission past the key's limits is a 429 and inserts
    nothing. With tracing, the insert has a span of its own, whose traceparent
    is stored with the tasks (api/tracing.py)."""
    key = idempotency_key()
    who = caller()
    items = len(accepted)
    admission.check_fits(items)
    try:
        with tracing.insert_span(items) as span:
            if key is None:
                member = Member(accepted, admission.limit_parameters(who, items), span.traceparent)
                ids = current_app.extensions["group_commit"].submit(member)
                span.inserted(ids, True)
                return ids, True

            # Behind PgBouncer the NOTIFY goes in the insert's own transaction
            # (it reads the session: docs/operations.md, "Many API processes behind PgBouncer").
            pooled = current_app.extensions["pool"].one_sync_per_round_trip

            def insert(conn):
                ids = admission.inserted_ids(admission.insert_many(conn, who, accepted, span.traceparent))
                if pooled:
                    notify_tasks_inserted(conn)
                return ids

            with connection() as conn:
                ids, created = submit_once(conn, key, body, insert, who.owner, admission.Refused)
                if created and not pooled:
                    notify_tasks_inserted(conn)
            span.inserted(ids, created)
        return ids, created
    except admission.Refused as refused:
        raise admission.refusal(refused, who, items) from None


def _accepted(payload: dict, created: bool):
    response = jsonify(payload)
    response.status_code = 202
    if not created:
        response.headers["Idempotent-Replayed"] = "true"
    return response


@blueprint.post("/expression")
def submit_expression():
    body = json_object(required={"expression"}, optional={"variables"})
    (task_id,), created = _store(body, [checked_submission(body)])
    response = _accepted({"expression_id": task_id}, created)
    # What url_for("expressions.get_result", ...) builds, without the URL
    # map (4% of a POST's CPU).
    response.headers["Location"] = f"{request.script_root}/api/result/{task_id}"
    return response


@blueprint.post("/expressions")
def submit_expressions():
    body = json_object(required={"items"})
    items = batch(body, "items", "submissions")
    accepted, errors = [], []
    for index, item in enumerate(items):
        try:
            accepted.append(checked_submission(_submission_object(item)))
        except (ExpressionError, BadRequest) as error:
            errors.append({"index": index, "msg": str(error)})
    if errors:
        response = jsonify({"msg": f"{len(errors)} of {len(items)} items are invalid; nothing was submitted",
                            "errors": errors})
        response.status_code = 400
        return response

    ids, created = _store(body, accepted)
    return _accepted({"expression_ids": ids}, created)


def _submission_object(item) -> dict:
    if not isinstance(item, dict):
        raise BadRequest(f"an item must be an object, not {json_type(item)}")
    if "expression" not in item:
        raise BadRequest("missing key(s): expression")
    unknown = sorted(item.keys() - {"expression", "variables"})
    if unknown:
        raise BadRequest("unknown key(s): " + ", ".join(unknown))
    return item


@blueprint.get("/result/<expression_id>")
def get_result(expression_id: str):
    task_id = parse_expression_id(expression_id)
    wait = _wait_seconds()
    only = caller().only_owner

    def read_outcome():
        with connection() as conn:
            return conn.execute(SELECT_OUTCOME, {"id": task_id, "only": only}, prepare=True).fetchone()

    if wait > 0:
        # Registered first, then read: one read when the outcome is already
        # there, and nothing stored in between is missed.
        row = wait_for_outcome(current_app.extensions["result_waiter"], task_id, wait, read_outcome)
    else:
        row = read_outcome()
    if row is None:
        raise missing(task_id)
    response = jsonify(outcome_json(task_id, *row))
    if row[0] == "pending":
        response.status_code = 202
    return response


@blueprint.get("/results")
def get_results():
    raw = request.args.get("ids", "")
    max_batch = current_app.config["SETTINGS"].max_batch
    if not raw:
        raise BadRequest("give ids as ?ids=1,2,3")
    if not IDS.fullmatch(raw):
        raise BadRequest(f"ids must be expression ids separated by commas, like ?ids=1,2,3, not {raw[:40]!r}")
    parts = raw.split(",")
    if len(parts) > max_batch:
        raise BadRequest(f"at most {max_batch} ids at once, not {len(parts)}")
    # An id past the largest bigint cannot exist: it is unknown like any other absent id.
    ids = [_bulk_id(p) for p in parts]
    wait = _wait_seconds()
    params = {"ids": [i for i in ids if i <= MAX_BIGINT], "only": caller().only_owner}

    def read_outcomes() -> dict:
        with connection() as conn:
            return {r[0]: r[1:] for r in conn.execute(SELECT_OUTCOMES, params)}

    def any_pending(found: dict) -> bool:
        return any(row[0] == "pending" for row in found.values())

    found = read_outcomes()
    if wait > 0 and any_pending(found):
        # One wait for the whole list, woken by the storing of any of its
        # pending tasks; it answers when none is pending, or at the deadline.
        pending = [i for i, row in found.items() if row[0] == "pending"]
        found = wait_for_outcomes(current_app.extensions["result_waiter"], pending, wait,
                                  read_outcomes, any_pending)
    purged_through, kept_for = 0, None
    if len(found) < len(set(ids)):
        with connection() as conn:
            purged_through, kept_for = conn.execute(SELECT_RETENTION).fetchone()
    results = []
    for task_id in ids:
        if task_id in found:
            results.append(outcome_json(task_id, *found[task_id]))
        elif task_id <= purged_through:
            results.append({"expression_id": task_id, "status": "expired",
                            "msg": expired_message(task_id, kept_for)})
        else:
            results.append({"expression_id": task_id, "status": "unknown",
                            "msg": f"no expression with id {task_id}"})
    return jsonify({"results": results})


def _wait_seconds() -> float:
    if not request.query_string:
        return 0.0  # the common case, without parsing the arguments
    raw = request.args.get("wait")
    if raw is None:
        return 0.0
    max_wait = current_app.config["SETTINGS"].max_wait
    try:
        seconds = float(raw)
    except ValueError:
        seconds = -1.0
    if not 0 <= seconds <= max_wait:  # also refuses nan
        raise BadRequest(f"wait must be a number of seconds from 0 to {max_wait:g}, not {raw[:40]!r}")
    return seconds


def _bulk_id(text: str) -> int:
    try:
        return parse_expression_id(text)
    except BadRequest as error:
        digits = text.lstrip("0")
        if error.status != 404 or len(digits) > 40:
            raise BadRequest(f"expression id must be a positive integer, not {text[:40]!r}") from None
        return int(digits)


def parse_expression_id(text: str) -> int:
    if not (text.isascii() and text.isdigit()) or not text.strip("0"):
        raise BadRequest(f"expression id must be a positive integer, not {text[:40]!r}")
    digits = text.lstrip("0")
    if len(digits) > 19 or int(digits) > MAX_BIGINT:
        raise BadRequest(f"no expression with id {digits[:40]}", 404)
    return int(digits)


def missing(task_id: int) -> BadRequest:
    """The answer for an id not in tasks: 410 if retention deleted it, else 404."""
    with connection() as conn:
        purged_through, kept_for = conn.execute(SELECT_RETENTION, prepare=True).fetchone()
    if task_id <= purged_through:
        return BadRequest(expired_message(task_id, kept_for), 410)
    return BadRequest(f"no expression with id {task_id}", 404)


def expired_message(task_id: int, kept_for) -> str:
    # kept_for: the retention every deletion so far was made under (sql/012),
    # NULL when they differed: then no figure, rather than a wrong one.
    kept = (f"results are kept for {human_duration(kept_for)}" if kept_for
            else "its result was deleted by the retention of finished results")
    return f"expression {task_id} expired: {kept}"


def human_duration(interval) -> str:
    seconds = round(interval.total_seconds())
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size and seconds % size == 0:
            count = seconds // size
            return f"{count} {unit}{'s' if count != 1 else ''}"
    return f"{seconds} second{'s' if seconds != 1 else ''}"


def outcome_json(task_id: int, status: str, result, error) -> dict:
    if status == "cancelled":
        return {"expression_id": task_id, "status": "cancelled"}
    if status == "done":
        return {"expression_id": task_id, "status": "done", "result": result}
    if status == "error":
        return {"expression_id": task_id, "status": "error", "msg": error}
    return {"expression_id": task_id, "status": "pending"}
