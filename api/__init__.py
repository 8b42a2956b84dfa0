"""The HTTP API: submit expressions, read results."""

from __future__ import annotations

import logging
from typing import Any, Mapping

from flask import Flask

from core.settings import ApiSettings, database_url


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """Application factory. config overrides what is read from the environment:
    DATABASE_URL, SETTINGS (an ApiSettings), CHECK_SCHEMA (default True)."""
    app = Flask(__name__)
    settings = ApiSettings.from_env()
    app.config.update(
        DATABASE_URL=database_url(),
        SETTINGS=settings,
        CHECK_SCHEMA=True,
    )
    if config:
        app.config.update(config)
    app.config["MAX_CONTENT_LENGTH"] = app.config["SETTINGS"].max_content_length
    app.json.sort_keys = False
    # Werkzeug would answer "//" in a path with an HTML 308 redirect; we want
    # every answer to be JSON, so such a path is simply not found.
    app.url_map.merge_slashes = False

    from api import cancel, dashboard, db, errors, expressions, health, metrics, openapi, same_origin, stats
    from api.result_waiter import ResultWaiter
    db.init_app(app)
    errors.init_app(app)
    metrics.init_app(app)
    same_origin.init_app(app)
    app.extensions["result_waiter"] = ResultWaiter(app.config["DATABASE_URL"])
    app.register_blueprint(expressions.blueprint)
    app.register_blueprint(cancel.blueprint)
    app.register_blueprint(stats.blueprint)
    app.register_blueprint(health.blueprint)
    app.register_blueprint(openapi.blueprint)
    app.register_blueprint(dashboard.blueprint)
    logging.getLogger("api").info("api ready")
    return app
