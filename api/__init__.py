"""The HTTP API: submit expressions, read results."""

from __future__ import annotations

import logging
import sys
from typing import Any, Mapping

from flask import Flask

from core.settings import ApiSettings, database_url, listen_database_url


JSONB_MAX_DIGITS = 140_000


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """Application factory. config overrides what is read from the environment:
    DATABASE_URL, LISTEN_DATABASE_URL, SETTINGS (an ApiSettings), CHECK_SCHEMA
    (default True)."""
    # The API only reads numbers the database already holds. A row written
    # with psql may hold an integer longer than Python's default 4,300-digit
    # limit for int <-> str (jsonb allows some 131,000 digits): reading or
    # answering it must not be a 500. Numbers that come *in* are never turned
    # into ints unchecked (core/numbers.py caps them at 1,000 digits first).
    sys.set_int_max_str_digits(max(sys.get_int_max_str_digits(), JSONB_MAX_DIGITS))
    app = Flask(__name__)
    settings = ApiSettings.from_env()
    app.config.update(
        DATABASE_URL=database_url(),
        SETTINGS=settings,
        CHECK_SCHEMA=True,
    )
    if config:
        app.config.update(config)
    # The LISTEN connection: LISTEN_DATABASE_URL, else the pool's database.
    app.config.setdefault("LISTEN_DATABASE_URL", None)
    if not app.config["LISTEN_DATABASE_URL"]:
        app.config["LISTEN_DATABASE_URL"] = (listen_database_url() if not config or "DATABASE_URL" not in config
                                             else app.config["DATABASE_URL"])
    app.config["MAX_CONTENT_LENGTH"] = app.config["SETTINGS"].max_content_length
    app.json.sort_keys = False
    # Every view and hook is a plain function: Flask's check for coroutines
    # on each of them, on every request, was ~4% of a GET's CPU.
    app.ensure_sync = _plain
    # Werkzeug would answer "//" in a path with an HTML 308 redirect; we want
    # every answer to be JSON, so such a path is simply not found.
    app.url_map.merge_slashes = False

    from api import (allowed_hosts, auth, cancel, dashboard, db, errors, expressions, health, listing,
                     metrics, openapi, same_origin, security_headers, stats, tracing)
    from api.group_commit import GroupCommit
    from api.result_waiter import ResultWaiter
    tracing.init_app(app)  # first: the request's span covers the other hooks
    db.init_app(app)
    errors.init_app(app)
    metrics.init_app(app)
    same_origin.init_app(app)
    allowed_hosts.init_app(app)
    security_headers.init_app(app)
    app.extensions["result_waiter"] = ResultWaiter(app.config["LISTEN_DATABASE_URL"])
    app.extensions["group_commit"] = GroupCommit(app.config["SETTINGS"].db_timeout,
                                                   app.config["SETTINGS"].group_commit)
    auth.init_app(app)
    app.register_blueprint(expressions.blueprint)
    app.register_blueprint(cancel.blueprint)
    app.register_blueprint(listing.blueprint)
    app.register_blueprint(stats.blueprint)
    app.register_blueprint(health.blueprint)
    app.register_blueprint(openapi.blueprint)
    app.register_blueprint(dashboard.blueprint)
    if app.config["SETTINGS"].auth == "off":
        logging.getLogger("api").warning(
            "AUTH=off: no API keys; anyone who reaches this port reads and cancels every task")
    logging.getLogger("api").info("api ready")
    return app


def _plain(function):
    """Flask.ensure_sync for an app without async views (see create_app)."""
    return function
