"""GET /api/openapi.json: the API's description (api/openapi.json), with the
limits this process enforces filled in from its settings (RESULT_MAX_WAIT,
MAX_BATCH, MAX_EXPRESSION_LENGTH) and the schema version it needs, so the
document served never disagrees with the service."""

from __future__ import annotations

import copy
import json
from functools import cache
from pathlib import Path

from flask import Blueprint, current_app, jsonify

from core.migrations import required_version

blueprint = Blueprint("openapi", __name__)

SPEC_PATH = Path(__file__).with_name("openapi.json")


@cache
def load_spec() -> dict:
    return json.loads(SPEC_PATH.read_text())


def served_spec(settings) -> dict:
    spec = copy.deepcopy(load_spec())
    paths, schemas = spec["paths"], spec["components"]["schemas"]
    for path in ("/api/result/{expression_id}", "/api/results", "/api/tasks"):
        for parameter in paths[path]["get"]["parameters"]:
            if parameter["name"] == "wait":
                parameter["schema"]["maximum"] = settings.max_wait
            if parameter["name"] == "limit":
                parameter["schema"]["maximum"] = settings.max_batch
    bulk = paths["/api/expressions"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    bulk["properties"]["items"]["maxItems"] = settings.max_batch
    schemas["Submission"]["properties"]["expression"]["maxLength"] = settings.limits.max_expression_length
    ready = paths["/readyz"]["get"]["responses"]["200"]["content"]["application/json"]["example"]
    ready["schema_version"] = required_version()
    return spec


@blueprint.get("/api/openapi.json")
def openapi_spec():
    spec = current_app.extensions.get("openapi_spec")
    if spec is None:
        spec = current_app.extensions["openapi_spec"] = served_spec(current_app.config["SETTINGS"])
    return jsonify(spec)
