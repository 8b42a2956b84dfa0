"""State-changing requests come from this site's own pages or from no page.

A browser tells where a request comes from (the Origin header, and
Sec-Fetch-Site in current browsers); a POST (or PUT, PATCH, DELETE) that a
page of another site makes a visitor's browser send is refused with 403,
before it does anything. Clients that are not browsers (curl, scripts,
calc) send neither header and are not affected.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from flask import Flask, request

from api.errors import error_response

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def init_app(app: Flask) -> None:
    app.before_request(refuse_cross_origin)


def refuse_cross_origin():
    if request.method in SAFE_METHODS:
        return None
    fetch_site = request.headers.get("Sec-Fetch-Site")
    if fetch_site in ("cross-site", "same-site"):
        return _refused(f"a page of another site ({fetch_site})")
    origin = request.headers.get("Origin")
    if origin is None:
        return None
    if origin == "null" or _origin(origin) != _origin(request.host_url):
        return _refused(f"a page of {origin[:100]!r}")
    return None


DEFAULT_PORTS = {"http": 80, "https": 443}


def _origin(url: str) -> tuple[str, str, int | None] | None:
    """(scheme, host, port) with the scheme's default port filled in; None if malformed.
    An origin is all three: http://localhost:5000 is not https://localhost:5000."""
    try:
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        return scheme, (parts.hostname or "").rstrip("."), parts.port or DEFAULT_PORTS.get(scheme)
    except ValueError:
        return None


def _refused(source: str):
    return error_response(
        f"refused: this {request.method} comes from {source}; "
        f"requests that change anything must come from this site ({request.host_url.rstrip('/')})", 403)
