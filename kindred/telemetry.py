"""OpenTelemetry set-up for every Kindred process.

Configured by the standard variables: OTEL_SERVICE_NAME, OTEL_TRACES_EXPORTER (otlp, console, none;
default none), OTEL_METRICS_EXPORTER (otlp, console, none), OTEL_EXPORTER_OTLP_ENDPOINT and friends.
`Settings.trace_file` adds a JSON-lines span file. Tests pass an in-memory exporter.
Spans cross processes through the gRPC instrumentation (W3C traceparent in metadata).

When nothing would receive spans (no exporter, no trace file: the default), no SDK tracer provider is
installed, and the tracers `get_tracer` returns hand out one shared do-nothing span. Why: a Recommend
opens ~20 spans, and a recording span costs several times the API's own no-op span, which costs several
times the quiet one (timed ad hoc while profiling Recommend; the gain shows in bench_recommend_latency's
CPU per request against its baseline commit). Once
any tracer provider is installed — here or by a test — they record as before.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    ConsoleMetricExporter,
    MetricReader,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
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
        processors: list[SpanProcessor] = []
        for name in _exporter_names(env.get("OTEL_TRACES_EXPORTER", "none")):
            if name == "console":
                processors.append(SimpleSpanProcessor(ConsoleSpanExporter()))
            elif name == "otlp":
                from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

                processors.append(BatchSpanProcessor(OTLPSpanExporter()))
        if settings.trace_file is not None:
            processors.append(SimpleSpanProcessor(JsonLinesSpanExporter(settings.trace_file)))
        processors.extend(SimpleSpanProcessor(exporter) for exporter in span_exporters)
        if processors:  # else spans would go nowhere: keep the API's default and `get_tracer`'s quiet spans
            provider = TracerProvider(resource=resource)
            for processor in processors:
                provider.add_span_processor(processor)
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


_tracing_seen = False  # a provider cannot be uninstalled: once seen, always enabled


def tracing_enabled() -> bool:
    """True once a tracer provider is installed (spans are recorded); False while none is (the default
    without exporters), when span work — e.g. the gRPC OpenTelemetry interceptors — only costs CPU.

    Asked for every span, so it reads the API's provider slot when it can: `trace.get_tracer_provider()`
    looks the environment up on every call until a provider is installed (~3 µs, ~15 times a request).
    """
    global _tracing_seen
    if _tracing_seen:
        return True
    installed = getattr(trace, "_TRACER_PROVIDER", _NO_SLOT)
    if installed is _NO_SLOT or (installed is None and _ENV_NAMES_PROVIDER):
        # An API without the slot, or a provider named by the environment (loaded on first ask).
        installed = trace.get_tracer_provider()
        if isinstance(installed, trace.ProxyTracerProvider):
            installed = None
    _tracing_seen = installed is not None
    return _tracing_seen


_NO_SLOT = object()
# Read once: looking the environment up costs ~3 µs, and the API reads it only when it loads a provider.
_ENV_NAMES_PROVIDER = "OTEL_PYTHON_TRACER_PROVIDER" in os.environ


class _QuietSpan(AbstractContextManager[trace.Span]):
    """What `start_as_current_span` returns while no tracer provider is installed: enters as the API's
    invalid (non-recording) span, touches no context. Stateless, so one instance serves every thread."""

    def __enter__(self) -> trace.Span:
        return trace.INVALID_SPAN

    def __exit__(self, *exc: object) -> None:
        return None


_QUIET_SPAN = _QuietSpan()


class KindredTracer(trace.Tracer):
    """A tracer that asks for the real one only once a tracer provider is installed (see the module
    docstring); until then its spans are `_QUIET_SPAN`. A provider cannot be uninstalled, so once
    found the real tracer is kept."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._real: trace.Tracer | None = None

    def _tracer(self) -> trace.Tracer | None:
        real = self._real
        if real is None and tracing_enabled():
            real = self._real = trace.get_tracer(self._name)
        return real

    def start_span(self, name: str, *args: Any, **kwargs: Any) -> trace.Span:
        real = self._tracer()
        return trace.INVALID_SPAN if real is None else real.start_span(name, *args, **kwargs)

    def start_as_current_span(  # type: ignore[override]
        self, name: str, *args: Any, **kwargs: Any
    ) -> AbstractContextManager[trace.Span]:
        real = self._tracer()
        return _QUIET_SPAN if real is None else real.start_as_current_span(name, *args, **kwargs)


def get_tracer(name: str) -> trace.Tracer:
    return KindredTracer(name)


def get_meter(name: str) -> metrics.Meter:
    return metrics.get_meter(name)
