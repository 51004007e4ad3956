"""Fixtures shared by every test tier."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from kindred.config import Settings
from kindred.telemetry import configure_telemetry

os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")


@pytest.fixture(scope="module")
def spans() -> Iterator[InMemorySpanExporter]:
    """Collects the spans of one test module in memory.

    The SDK provider can be installed once per process, so this attaches to it if a previous module
    installed it, and installs it otherwise.
    """
    exporter = InMemorySpanExporter()
    provider = trace.get_tracer_provider()
    if isinstance(provider, TracerProvider):
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    else:
        configure_telemetry("kindred-tests", Settings(), environ={}, span_exporters=[exporter])
    yield exporter
    exporter.shutdown()  # stays attached to the global provider: stop it from collecting
