"""Idempotency-Key for POST /api/expression and POST /api/expressions, after
the IETF httpapi draft "The Idempotency-Key HTTP Header Field":

- the same key with the same request (method, path, body) within 24 hours
  answers what the first one answered and creates nothing;
- the same key with a different request is refused with 422;
- two requests with one key at the same time create one set of tasks: the
  second waits for the first's commit (the key's primary key) and replays it.

The key is a Structured Field string ("…", as the draft says) or, as many
clients send it, the bare value: 1 to 255 printable ASCII characters.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from typing import Callable

import psycopg
from flask import request

from api.errors import BadRequest
from core.database import error_summary, load_query

log = logging.getLogger("api")

HEADER = "Idempotency-Key"
MAX_KEY_LENGTH = 255
SWEEP_SECONDS = 600.0
_last_sweep = 0.0


class _KeyTaken(Exception):
    """Rolls back the tasks of a request whose key is already recorded."""


def idempotency_key() -> str | None:
    """The request's Idempotency-Key, None without one, BadRequest if malformed."""
    raw = request.headers.get(HEADER)
    if raw is None:
        return None
    key = raw.strip()
    if len(key) >= 2 and key[0] == key[-1] == '"':
        key = key[1:-1]
    if not 1 <= len(key) <= MAX_KEY_LENGTH or not all(" " <= c <= "~" for c in key) or '"' in key:
        raise BadRequest(f"{HEADER} must be 1 to {MAX_KEY_LENGTH} printable ASCII characters "
                         f"(a UUID is usual), not {raw[:40]!r}")
    return key


def fingerprint(body: dict) -> bytes:
    # Numbers arrive as Decimals (core/numbers.py), kept as they were written.
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(f"{request.method} {request.path}\n{canonical}".encode()).digest()


def submit_once(conn: psycopg.Connection, key: str, body: dict,
                insert: Callable[[psycopg.Connection], list[int]], owner: int | None = None,
                refused: type[Exception] | tuple = ()) -> tuple[list[int], bool]:
    """(ids, created): insert() runs, and its ids are recorded under key, in one
    transaction; if the key is already recorded, the first request's ids
    (created False) instead, or BadRequest 422 if that was another request.
    Keys are per owner (an API key's id; None: no keys): two clients never
    see each other's. An insert refused by a limit (raising refused) is
    answered from the record when the request was accepted before: a replay
    is not a new submission."""
    digest = fingerprint(body)
    scope = {"owner": owner or 0, "key": key}
    for _ in range(2):
        try:
            with conn.transaction():
                ids = insert(conn)
                recorded = conn.execute(load_query("remember_idempotency_key"),
                                        scope | {"fingerprint": digest, "expression_ids": ids}).fetchone()
                if recorded is None:
                    raise _KeyTaken()
            _sweep_now_and_then(conn)
            return ids, True
        except _KeyTaken:
            row = conn.execute(load_query("find_idempotency_key"), scope).fetchone()
        except refused:
            row = conn.execute(load_query("find_idempotency_key"), scope).fetchone()
            if row is None:
                raise  # a new request past the limit: refused
        if row is None:
            continue  # expired or swept in between: record it afresh
        first_digest, first_ids = row
        if bytes(first_digest) != digest:
            raise BadRequest(f"this {HEADER} was already used with a different request in the last "
                             "24 hours; use a new key for a new request", 422)
        return list(first_ids), False
    raise BadRequest(f"this {HEADER} is being replaced concurrently; send the request again", 409)


def _sweep_now_and_then(conn: psycopg.Connection) -> None:
    global _last_sweep
    now = time.monotonic()
    if now - _last_sweep < SWEEP_SECONDS:
        return
    _last_sweep = now
    try:
        conn.execute(load_query("sweep_idempotency_keys"))
    except psycopg.Error as error:
        log.warning("could not sweep old idempotency keys (%s); will try again later",
                    error_summary(error))
