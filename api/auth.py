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

Each API process keeps the rows of the keys it has seen (KeyCache) for as
long as its listener hears every change of api_keys: a trigger NOTIFYs
api_keys_changed on any change, which empties every process's cache, so a
revoked key stops working within milliseconds everywhere. While the listener
is not connected, every request reads its key's row.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import threading
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
CACHE_MAX_KEYS = 10_000


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


class KeyCache:
    """Rows of api_keys by id (only keys that exist), valid while the
    ResultWaiter's listener says api_keys has not changed since they were read."""

    def __init__(self, waiter):
        self._waiter = waiter
        self._lock = threading.Lock()
        self._rows: dict[int, tuple[int, tuple]] = {}

    def row(self, key_id: int, read):
        generation = self._waiter.keys_generation
        with self._lock:
            cached = self._rows.get(key_id)
        if cached is not None and cached[0] == generation and self._waiter.keys_unchanged_since(generation):
            return cached[1]
        row = read()
        # Kept only if nothing changed while it was read (a change then
        # could be older than what was read, or newer: either way, re-read).
        if row is not None and self._waiter.keys_unchanged_since(generation):
            with self._lock:
                if len(self._rows) >= CACHE_MAX_KEYS:
                    self._rows.clear()
                self._rows[key_id] = (generation, row)
        return row


def init_app(app: Flask) -> None:
    app.extensions["key_cache"] = KeyCache(app.extensions["result_waiter"])
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
    # Not echoed: what was sent may be a key in the wrong place.
    raise Unauthorized("send the API key as 'Authorization: Bearer <key>' (or HTTP Basic, the key "
                       "as the password); this Authorization header is neither")


def _caller_from_key(key: str) -> Caller:
    parsed = parse_key(key)
    key_id, secret = parsed if parsed else (0, "")
    row = None
    if parsed:
        def read():
            with connection() as conn:
                return conn.execute(load_query("find_api_key"), {"id": key_id}, prepare=True).fetchone()
        row = current_app.extensions["key_cache"].row(key_id, read)
    name, stored, admin, revoked = row if row else (None, _NO_SECRET, False, False)
    matches = hmac.compare_digest(bytes(stored), secret_sha256(secret))
    if row is None or not matches:
        raise Unauthorized("unknown API key")
    if revoked:
        raise Unauthorized(f"API key {name!r} was revoked")
    return Caller(owner=key_id, sees_all=admin, name=name)
