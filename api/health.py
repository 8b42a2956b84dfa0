"""GET /healthz (the process answers) and GET /readyz (the database answers
and its schema is current) for load balancers and compose health checks."""

from __future__ import annotations

from flask import Blueprint, jsonify

from api.db import connection
from api.errors import error_response
from core.migrations import SchemaError, check_schema

blueprint = Blueprint("health", __name__)


@blueprint.get("/healthz")
def healthz():
    return jsonify({"status": "ok"})


@blueprint.get("/readyz")
def readyz():
    try:
        with connection() as conn:
            version = check_schema(conn)
    except SchemaError as error:
        return error_response(str(error), 503)
    return jsonify({"status": "ready", "schema_version": version})
