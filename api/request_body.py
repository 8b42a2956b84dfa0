"""Reading a JSON request body strictly: the right content type, valid UTF-8,
valid JSON without NaN/Infinity, an object with exactly the expected keys."""

from __future__ import annotations

from typing import Any

from flask import current_app, request

from api.errors import BadRequest
from core.expression import decode_json, json_type


def json_object(required: set[str], optional: set[str] = frozenset()) -> dict[str, Any]:
    if not request.is_json:
        raise BadRequest("send a JSON body with Content-Type: application/json", 415)
    raw = request.get_data(cache=False)
    try:
        # Every number a Decimal: core/numbers.py decides what it means.
        body = decode_json(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise BadRequest("malformed JSON: the body is not valid UTF-8") from None
    except RecursionError:
        raise BadRequest("malformed JSON: nested too deeply") from None
    except ValueError as error:
        raise BadRequest(f"malformed JSON: {error}") from None
    if not isinstance(body, dict):
        raise BadRequest(f"the body must be a JSON object, not {json_type(body)}")
    missing = sorted(required - body.keys())
    if missing:
        raise BadRequest("missing key(s): " + ", ".join(missing))
    unknown = sorted(body.keys() - required - optional)
    if unknown:
        raise BadRequest("unknown key(s): " + ", ".join(unknown))
    return body


def batch(body: dict[str, Any], key: str, noun: str) -> list:
    """body[key] as a list of 1 to MAX_BATCH entries, or a 400 saying what is wrong."""
    entries = body[key]
    max_batch = current_app.config["SETTINGS"].max_batch
    if not isinstance(entries, list):
        raise BadRequest(f"'{key}' must be an array, not {json_type(entries)}")
    if not 1 <= len(entries) <= max_batch:
        raise BadRequest(f"'{key}' must hold 1 to {max_batch} {noun}, not {len(entries)}")
    return entries
