"""GET /api/openapi.json: the API's description (api/openapi.json)."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

from flask import Blueprint, jsonify

blueprint = Blueprint("openapi", __name__)

SPEC_PATH = Path(__file__).with_name("openapi.json")


@cache
def load_spec() -> dict:
    return json.loads(SPEC_PATH.read_text())


@blueprint.get("/api/openapi.json")
def openapi_spec():
    return jsonify(load_spec())
