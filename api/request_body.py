"""Reading a JSON request body strictly: the right content type (UTF-8, the
only charset JSON has), a size within MAX_CONTENT_LENGTH whether it comes with
Content-Length or chunked, valid UTF-8, valid JSON without NaN/Infinity, an
object with exactly the expected keys."""

from __future__ import annotations

from typing import Any

from flask import current_app, request
from werkzeug.exceptions import RequestEntityTooLarge

from api.errors import BadRequest
from core.expression import decode_json, json_type


def json_object(required: set[str], optional: set[str] = frozenset()) -> dict[str, Any]:
    if not request.is_json:
        raise BadRequest("send a JSON body with Content-Type: application/json", 415)
    charset = request.mimetype_params.get("charset")
    if charset is not None and charset.strip().lower() not in ("utf-8", "utf8"):
        raise BadRequest(f"the body must be UTF-8 (JSON's only encoding), not charset={charset[:40]}; "
                         "send Content-Type: application/json (or charset=utf-8)", 415)
    raw = body_bytes()
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


CHUNK = 65536


def body_bytes() -> bytes:
    """The request body; 413 if it is over MAX_CONTENT_LENGTH. With
    Content-Length, Werkzeug refuses a larger one before reading; a chunked
    body (no Content-Length) is read here up to one byte past the limit, since
    Werkzeug would cut it at the limit without a word."""
    if request.content_length is not None or not request.environ.get("wsgi.input_terminated"):
        return request.get_data(cache=False)
    limit = current_app.config["MAX_CONTENT_LENGTH"]
    stream, chunks, size = request.environ["wsgi.input"], [], 0
    while size <= limit:
        chunk = stream.read(min(CHUNK, limit + 1 - size))
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    if size > limit:
        raise RequestEntityTooLarge()
    return b"".join(chunks)


def batch(body: dict[str, Any], key: str, noun: str) -> list:
    """body[key] as a list of 1 to MAX_BATCH entries, or a 400 saying what is wrong."""
    entries = body[key]
    max_batch = current_app.config["SETTINGS"].max_batch
    if not isinstance(entries, list):
        raise BadRequest(f"'{key}' must be an array, not {json_type(entries)}")
    if not 1 <= len(entries) <= max_batch:
        raise BadRequest(f"'{key}' must hold 1 to {max_batch} {noun}, not {len(entries)}")
    return entries
