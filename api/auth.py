"""Who is asking: API keys (AUTH=required) and what each may see.

With AUTH=off (the default: `make run`) nobody is asked for a key, tasks
belong to nobody and every request sees every task, as before keys existed.

With AUTH=required:
- every /api/* request carries a key, as "Authorization: Bearer <key>" or,
  for browsers and tools that only know it, HTTP Basic auth with the key as
  the password (or as the user name with an empty password: curl -u KEY:);
  a missing, unknown or revoked key is 401 with WWW-Authenticate;
- the web page (/ and /dashboard/...) and /metrics need an admin key (403
  for another key); the browser asks for it (the Basic challenge);
- /healthz, /readyz, /api/openapi.json and the page's static files are open.

The key's row is read on every request (one primary-key lookup), so a
revoked key stops working at once, on every API process.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from dataclasses import dataclass

from flask import Flask, current_app, g, request

from api.db import connection
from api.errors import BadRequest
from api.keys import parse_key, secret_sha256
from core.database import load_query

OPEN_PATHS = frozenset({"/healthz", "/readyz", "/api/openapi.json"})
OPEN_PREFIXES = ("/dashboard/static/",)
ADMIN_PATHS = frozenset({"/", "/metrics"})
ADMIN_PREFIXES = ("/dashboard/",)
REALM = "calculator-service"
# Compared against when the id names no key, so that an unknown id costs what a known one does.
_NO_SECRET = bytes(32)


@dataclass(frozen=True)
class Caller:
    """Who a request comes from. owner: the id its tasks get (None: nobody);
    sees_all: reads and cancels every task (admin keys, AUTH=off)."""

    owner: int | None
    sees_all: bool
    name: str | None = None

    @property
    def only_owner(self) -> int | None:
        """The owner to limit reads and cancels to; None: no limit."""
        return None if self.sees_all else self.owner


NOBODY = Caller(owner=None, sees_all=True)


class Unauthorized(BadRequest):
    def __init__(self, msg: str):
        super().__init__(msg, 401)
        self.headers = [("WWW-Authenticate", f'Bearer realm="{REALM}"'),
                        ("WWW-Authenticate", f'Basic realm="{REALM}", charset="UTF-8"')]


def init_app(app: Flask) -> None:
    app.before_request(authenticate)


def caller() -> Caller:
    return g.get("caller", NOBODY)


def authenticate() -> None:
    if current_app.config["SETTINGS"].auth != "required":
        g.caller = NOBODY
        return
    path = request.path
    if path in OPEN_PATHS or path.startswith(OPEN_PREFIXES):
        return
    g.caller = _caller_from_key(_presented_key())
    if (path in ADMIN_PATHS or path.startswith(ADMIN_PREFIXES)) and not g.caller.sees_all:
        raise BadRequest(f"{path} needs an admin key; key {g.caller.name!r} is not one", 403)


def _presented_key() -> str:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.strip().partition(" ")
    value = value.strip()
    if not header:
        raise Unauthorized("an API key is needed: send 'Authorization: Bearer <key>' "
                           "(keys are made with python -m api.keys create NAME)")
    if scheme.lower() == "bearer" and value:
        return value
    if scheme.lower() == "basic" and value:
        try:
            user, _, password = base64.b64decode(value, validate=True).decode("utf-8").partition(":")
        except (binascii.Error, UnicodeDecodeError):
            raise Unauthorized("malformed Basic credentials: send 'Authorization: Bearer <key>'") from None
        return password or user
    raise Unauthorized("send the API key as 'Authorization: Bearer <key>', "
                       f"not as {scheme[:20]!r}")


def _caller_from_key(key: str) -> Caller:
    parsed = parse_key(key)
    key_id, secret = parsed if parsed else (0, "")
    row = None
    if parsed:
        with connection() as conn:
            row = conn.execute(load_query("find_api_key"), {"id": key_id}, prepare=True).fetchone()
    name, stored, admin, revoked = row if row else (None, _NO_SECRET, False, False)
    matches = hmac.compare_digest(bytes(stored), secret_sha256(secret))
    if row is None or not matches:
        raise Unauthorized("unknown API key")
    if revoked:
        raise Unauthorized(f"API key {name!r} was revoked")
    return Caller(owner=key_id, sees_all=admin, name=name)
