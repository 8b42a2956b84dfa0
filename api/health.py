"""GET /healthz (the process answers) and GET /readyz (the database answers
and its schema is current) for load balancers and compose health checks."""

from __future__ import annotations

from flask import Blueprint, jsonify

from api.db import connection
from api.errors import error_response
from core.migrations import current_version, required_version

blueprint = Blueprint("health", __name__)


@blueprint.get("/healthz")
def healthz():
    return jsonify({"status": "ok"})


@blueprint.get("/readyz")
def readyz():
    with connection() as conn:
        have = current_version(conn)
    need = required_version()
    if have < need:
        return error_response(f"schema is at version {have}, this API needs {need}", 503)
    return jsonify({"status": "ready", "schema_version": have})
