"""The API's spans (docs/operations.md, "Traces").

With tracing configured (core/tracing.py), every request gets a server span
from Flask's OpenTelemetry instrumentation, continuing the trace of an
incoming W3C traceparent header, and a submission gets an "INSERT tasks"
span inside it. The traceparent of that insert span is stored with the new
tasks (tasks.trace_context, sql/015): the Calculator's spans of each task
are its children (worker/tracing.py), so one trace shows the request, the
insert, and each task's claim, evaluation and store.

Without tracing, init_app only notes so, insert_span yields NO_TRACE, and
no opentelemetry package is imported.
"""

from __future__ import annotations

import contextlib
import os
from typing import Iterator

from flask import Flask, current_app

from core import tracing

# Scraped and probed all the time: not worth a trace each, unless the
# operator names the excluded URLs with the instrumentation's own variables.
DEFAULT_EXCLUDED_URLS = "/metrics,/healthz,/readyz,/static/"

_provider = None  # one per process: create_app may run many times in one


class _NoTrace:
    traceparent = None

    def inserted(self, ids, created: bool) -> None:
        pass


NO_TRACE = _NoTrace()


def init_app(app: Flask) -> None:
    app.extensions["tracing"] = None
    if not tracing.enabled():
        return
    global _provider
    if _provider is None:
        _provider, _ = tracing.tracer_provider("calculator-api")
    from opentelemetry.instrumentation.flask import FlaskInstrumentor
    excluded = None
    if not (os.environ.get("OTEL_PYTHON_FLASK_EXCLUDED_URLS") or os.environ.get("OTEL_PYTHON_EXCLUDED_URLS")):
        excluded = DEFAULT_EXCLUDED_URLS
    FlaskInstrumentor().instrument_app(app, tracer_provider=_provider, excluded_urls=excluded,
                                       enable_commenter=False)
    app.extensions["tracing"] = _provider.get_tracer("calculator-service.api")


class _InsertSpan:
    def __init__(self, span, traceparent: str | None):
        self.span, self.traceparent = span, traceparent

    def inserted(self, ids, created: bool) -> None:
        self.span.set_attribute("calculator.tasks.count", len(ids))
        if ids:
            self.span.set_attribute("calculator.tasks.first_id", ids[0])
        if not created:
            self.span.set_attribute("calculator.idempotent_replay", True)


@contextlib.contextmanager
def insert_span(items: int) -> Iterator:
    """Around a submission's insert: yields what to store with the tasks
    (.traceparent, None without tracing) and to tell the ids to (.inserted)."""
    tracer = current_app.extensions.get("tracing")
    if tracer is None:
        yield NO_TRACE
        return
    from opentelemetry.trace import SpanKind
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
    with tracer.start_as_current_span("INSERT tasks", kind=SpanKind.CLIENT, attributes={
            "db.system.name": "postgresql", "db.operation.name": "INSERT",
            "db.collection.name": "tasks", "calculator.tasks.submitted": items}) as span:
        carrier: dict[str, str] = {}
        TraceContextTextMapPropagator().inject(carrier)
        yield _InsertSpan(span, carrier.get("traceparent"))
