"""A tiny HTTP client for tests against a real server (standard library only)."""

from __future__ import annotations

import http.client
import json
from urllib.parse import urlsplit


def request(base_url: str, method: str, path: str, body: bytes | str | None = None,
            headers: dict[str, str] | None = None, timeout: float = 30):
    """Returns (status, headers, parsed JSON or raw text)."""
    parts = urlsplit(base_url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    try:
        if isinstance(body, str):
            body = body.encode()
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        raw = response.read()
        try:
            payload = json.loads(raw)
        except ValueError:
            payload = raw.decode(errors="replace")
        return response.status, dict(response.getheaders()), payload
    finally:
        conn.close()


def post_json(base_url: str, path: str, payload) -> tuple:
    return request(base_url, "POST", path, json.dumps(payload),
                   {"Content-Type": "application/json"})


def answers(base_url: str, path: str = "/healthz") -> bool:
    """Whether a server at base_url answers path with 200 (for waiting until it does)."""
    try:
        return request(base_url, "GET", path, timeout=2)[0] == 200
    except OSError:
        return False
