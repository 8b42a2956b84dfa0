"""Every error is JSON {"msg": ...}: never an HTML page or a stack trace."""

from __future__ import annotations

import logging

from flask import Flask, jsonify, request
from werkzeug.exceptions import HTTPException, MethodNotAllowed, NotFound, RequestEntityTooLarge

from api.db import DatabaseUnavailable
from core.database import error_summary
from core.expression import ExpressionError

log = logging.getLogger("api")


class BadRequest(ValueError):
    """Input the client can fix; status 400 unless given."""

    def __init__(self, msg: str, status: int = 400, headers: list[tuple[str, str]] | None = None):
        super().__init__(msg)
        self.status = status
        self.headers = headers or []


def error_response(msg: str, status: int):
    response = jsonify({"msg": msg})
    response.status_code = status
    return response


def init_app(app: Flask) -> None:
    @app.errorhandler(BadRequest)
    def bad_request(error: BadRequest):
        response = error_response(str(error), error.status)
        for name, value in error.headers:
            response.headers.add(name, value)
        return response

    @app.errorhandler(ExpressionError)
    def bad_expression(error: ExpressionError):
        return error_response(str(error), 400)

    @app.errorhandler(DatabaseUnavailable)
    def database_unavailable(error: DatabaseUnavailable):
        # The outage itself is logged once by api.db when it starts and ends.
        log.debug("database unavailable path=%s error=%s", request.path, error_summary(error))
        response = error_response("database unavailable", 503)
        response.headers["Retry-After"] = "1"
        return response

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException):
        if isinstance(error, NotFound):
            msg = f"no such endpoint: {request.path}"
        elif isinstance(error, MethodNotAllowed):
            allowed = ", ".join(sorted(m for m in error.valid_methods or [] if m not in ("HEAD", "OPTIONS")))
            msg = f"method {request.method} is not allowed here; use {allowed}"
        elif isinstance(error, RequestEntityTooLarge):
            msg = f"request body too large: the limit is {app.config['MAX_CONTENT_LENGTH']} bytes"
        else:
            msg = (error.name or "error").lower()
        response = error_response(msg, error.code or 500)
        if isinstance(error, MethodNotAllowed):
            response.headers["Allow"] = ", ".join(error.valid_methods or [])
        return response

    @app.errorhandler(Exception)
    def unexpected(error: Exception):
        log.exception("unhandled error path=%s", request.path)
        return error_response("internal error", 500)
