"""Only requests addressed to one of this API's own names are answered.

The Host header names the server a client meant. A page of another site can
make its own name resolve to this server (DNS rebinding) and then read and
change tasks as a same-origin page of "its" site; refusing every name that is
not in ALLOWED_HOSTS (400, on every route, before anything else) stops that.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from flask import Flask, current_app, request

from api.errors import error_response


def init_app(app: Flask) -> None:
    # First of the before_request functions: no other check, no database.
    app.before_request_funcs.setdefault(None, []).insert(0, refuse_unknown_host)


def host_name(host: str) -> str | None:
    """'localhost' from 'localhost:5000', '::1' from '[::1]:5000'; None if malformed."""
    try:
        parts = urlsplit("//" + host)
        parts.port  # a port that is not a number raises ValueError
    except ValueError:
        return None
    if not parts.hostname or parts.username is not None or parts.path or parts.query or parts.fragment:
        return None
    return parts.hostname.lower().rstrip(".")


def refuse_unknown_host():
    allowed = current_app.config["SETTINGS"].allowed_hosts
    if "*" in allowed:
        return None
    raw = request.host
    if host_name(raw) in allowed:
        return None
    return error_response(
        f"unknown host {raw[:100]!r}: this API answers to {', '.join(allowed)} "
        "(set ALLOWED_HOSTS to the names it is reached by)", 400)
