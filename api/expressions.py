"""POST /api/expression and GET /api/result/<id>."""

from __future__ import annotations

from flask import Blueprint, current_app, jsonify, url_for

from api.db import connection
from api.errors import BadRequest
from api.request_body import json_object
from core.expression import check_variables, compile_expression, variables_to_json

blueprint = Blueprint("expressions", __name__, url_prefix="/api")

INSERT_TASK = "INSERT INTO tasks (expression, variables) VALUES (%s, %s::jsonb) RETURNING id"
SELECT_OUTCOME = "SELECT status, result, error FROM tasks WHERE id = %s"
MAX_BIGINT = 2**63 - 1


@blueprint.post("/expression")
def submit_expression():
    body = json_object(required={"expression"}, optional={"variables"})
    limits = current_app.config["SETTINGS"].limits
    compiled = compile_expression(body["expression"], limits.max_expression_length)
    variables = check_variables(compiled, body.get("variables", {}), limits.max_variables)
    with connection() as conn:
        (task_id,) = conn.execute(
            INSERT_TASK, (body["expression"], variables_to_json(variables)), prepare=True).fetchone()
    response = jsonify({"expression_id": task_id})
    response.status_code = 202
    response.headers["Location"] = url_for("expressions.get_result", expression_id=task_id)
    return response


@blueprint.get("/result/<expression_id>")
def get_result(expression_id: str):
    task_id = parse_expression_id(expression_id)
    with connection() as conn:
        row = conn.execute(SELECT_OUTCOME, (task_id,), prepare=True).fetchone()
    if row is None:
        raise BadRequest(f"no expression with id {task_id}", 404)
    return outcome_response(task_id, *row)


def parse_expression_id(text: str) -> int:
    if not (text.isascii() and text.isdigit()) or not text.strip("0"):
        raise BadRequest(f"expression id must be a positive integer, not {text[:40]!r}")
    digits = text.lstrip("0")
    if len(digits) > 19 or int(digits) > MAX_BIGINT:
        raise BadRequest(f"no expression with id {digits[:40]}", 404)
    return int(digits)


def outcome_response(task_id: int, status: str, result, error):
    if status == "done":
        return jsonify({"expression_id": task_id, "status": "done", "result": result})
    if status == "error":
        return jsonify({"expression_id": task_id, "status": "error", "msg": error})
    response = jsonify({"expression_id": task_id, "status": "pending"})
    response.status_code = 202
    return response
