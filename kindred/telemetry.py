"""OpenTelemetry set-up for every Kindred process.

Configured by the standard variables: OTEL_SERVICE_NAME, OTEL_TRACES_EXPORTER (otlp, console, none;
default none), OTEL_METRICS_EXPORTER (otlp, console, none), OTEL_EXPORTER_OTLP_ENDPOINT and friends.
`Settings.trace_file` adds a JSON-lines span file. Tests pass an in-memory exporter.
Spans cross processes through the gRPC instrumentation (W3C traceparent in metadata).
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path

from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    ConsoleMetricExporter,
    MetricReader,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)

from kindred.config import Settings

_configured = False
_lock = threading.Lock()


class JsonLinesSpanExporter(SpanExporter):
    """Appends each finished span to a file as one JSON object a line (multi-process safe via O_APPEND)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._path = path
        self._lock = threading.Lock()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        lines = "".join(json.dumps(_span_to_dict(s)) + "\n" for s in spans)
        with self._lock, open(self._path, "a", encoding="utf-8") as fh:
            fh.write(lines)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        return None


def _span_to_dict(span: ReadableSpan) -> dict[str, object]:
    ctx = span.get_span_context()
    parent = span.parent
    return {
        "name": span.name,
        "trace_id": format(ctx.trace_id, "032x") if ctx else "",
        "span_id": format(ctx.span_id, "016x") if ctx else "",
        "parent_span_id": format(parent.span_id, "016x") if parent else None,
        "service": span.resource.attributes.get("service.name"),
        "kind": span.kind.name,
        "start_ns": span.start_time,
        "end_ns": span.end_time,
        "status": span.status.status_code.name,
        "attributes": {k: _jsonable(v) for k, v in (span.attributes or {}).items()},
    }


def _jsonable(value: object) -> object:
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    if isinstance(value, Sequence):
        return [_jsonable(v) for v in value]
    return str(value)


def configure_telemetry(
    service_name: str,
    settings: Settings,
    *,
    environ: Mapping[str, str] | None = None,
    span_exporters: Sequence[SpanExporter] = (),
    metric_readers: Sequence[MetricReader] = (),
) -> None:
    """Installs global tracer and meter providers once per process (later calls are no-ops)."""
    global _configured
    env = os.environ if environ is None else environ
    with _lock:
        if _configured:
            return
        resource = Resource.create({"service.name": env.get("OTEL_SERVICE_NAME", service_name)})
        provider = TracerProvider(resource=resource)
        for name in _exporter_names(env.get("OTEL_TRACES_EXPORTER", "none")):
            if name == "console":
                provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter()))
            elif name == "otlp":
                from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

                provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        if settings.trace_file is not None:
            provider.add_span_processor(SimpleSpanProcessor(JsonLinesSpanExporter(settings.trace_file)))
        for exporter in span_exporters:
            provider.add_span_processor(SimpleSpanProcessor(exporter))
        trace.set_tracer_provider(provider)

        readers: list[MetricReader] = list(metric_readers)
        for name in _exporter_names(env.get("OTEL_METRICS_EXPORTER", "none")):
            if name == "console":
                readers.append(PeriodicExportingMetricReader(ConsoleMetricExporter()))
            elif name == "otlp":
                from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter

                readers.append(PeriodicExportingMetricReader(OTLPMetricExporter()))
        metrics.set_meter_provider(MeterProvider(resource=resource, metric_readers=readers))
        _configured = True


def shutdown_telemetry() -> None:
    """Flushes pending spans and metrics; call before a process exits.

    Flush, not shut down: the SDK providers shut themselves down at interpreter exit, and a second
    shutdown only logs a warning.
    """
    provider = trace.get_tracer_provider()
    if isinstance(provider, TracerProvider):
        provider.force_flush()
    meter_provider = metrics.get_meter_provider()
    if isinstance(meter_provider, MeterProvider):
        meter_provider.force_flush()


def _exporter_names(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip() and v.strip() != "none"]


def get_tracer(name: str) -> trace.Tracer:
    return trace.get_tracer(name)


def get_meter(name: str) -> metrics.Meter:
    return metrics.get_meter(name)
