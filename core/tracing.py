"""OpenTelemetry set-up shared by the API and the Calculator (docs/operations.md, "Traces").

Tracing is on when an OTLP endpoint is configured with the standard
variables (OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT),
unless OTEL_SDK_DISABLED=true or OTEL_TRACES_EXPORTER=none. Only then are
the opentelemetry packages (requirements-otel.txt) imported: this module
imports none of them at import time, and without the variables nothing
else of the service does either.

The spans go over OTLP/HTTP with protobuf (the exporter reads the other
OTEL_EXPORTER_OTLP_* variables itself: headers, timeout, compression,
certificates), through a batch processor (OTEL_BSP_*), sampled as
OTEL_TRACES_SAMPLER says (by default: every trace, except where the
incoming traceparent says it is not sampled).
"""

from __future__ import annotations

import os
from typing import Mapping

from core.settings import SettingsError

PROTOCOL = "http/protobuf"


def enabled(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether this process exports spans; SettingsError for a configuration
    it cannot serve (another protocol or exporter)."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporter = environ.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower() or "otlp"
    if exporter == "none":
        return False
    endpoint = (environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "").strip()
                or environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip())
    if not endpoint:
        return False
    if exporter != "otlp":
        raise SettingsError(f"OTEL_TRACES_EXPORTER must be otlp or none, got {exporter!r}")
    for name in ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"):
        protocol = environ.get(name, "").strip()
        if protocol:
            if protocol != PROTOCOL:
                raise SettingsError(f"{name} must be {PROTOCOL} (the only OTLP protocol this service "
                                    f"sends), got {protocol!r}")
            break
    return True


def tracer_provider(default_service_name: str, resource: Mapping[str, str] | None = None,
                    environ: Mapping[str, str] = os.environ):
    """(TracerProvider, its BatchSpanProcessor) exporting over OTLP/HTTP; its service.name is
    OTEL_SERVICE_NAME (or OTEL_RESOURCE_ATTRIBUTES'), else default_service_name;
    resource: more attributes of the process (OTEL_RESOURCE_ATTRIBUTES wins)."""
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    given = environ.get("OTEL_RESOURCE_ATTRIBUTES", "")
    attributes = {k: v for k, v in (resource or {}).items() if f"{k}=" not in given}
    named = environ.get("OTEL_SERVICE_NAME", "").strip() or \
        "service.name=" in environ.get("OTEL_RESOURCE_ATTRIBUTES", "")
    if not named:
        attributes["service.name"] = default_service_name
    provider = TracerProvider(resource=Resource.create(attributes))
    processor = BatchSpanProcessor(OTLPSpanExporter())
    provider.add_span_processor(processor)
    return provider, processor


def trace_id(traceparent: str | None) -> str | None:
    """The trace id (32 hex digits) of a version-00 traceparent, else None.
    Plain text work: log lines carry it whether or not tracing is on."""
    if traceparent is None or len(traceparent) < 55 or traceparent[2:3] != "-":
        return None
    return traceparent[3:35]
