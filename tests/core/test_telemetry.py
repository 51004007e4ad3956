"""Telemetry set-up: spans are recorded exactly when something receives them.

Each case runs in a fresh interpreter: a tracer provider can be installed once per process, and the
test session installs one of its own (tests/conftest.py).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

SCRIPT = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    from opentelemetry import trace
    from kindred.config import Settings
    from kindred.telemetry import configure_telemetry, get_tracer, shutdown_telemetry

    tracer = get_tracer("probe")  # made before set-up, as modules do at import
    trace_file = sys.argv[1]
    settings = Settings(trace_file=Path(trace_file)) if trace_file else Settings()
    configure_telemetry("probe_svc", settings, environ={})
    with tracer.start_as_current_span("outer") as outer:
        outer.set_attribute("k", 1)
        with tracer.start_as_current_span("inner") as inner:
            current = trace.get_current_span()
            print(json.dumps({
                "recording": inner.is_recording(),
                "current_is_inner": current is inner and current.is_recording(),
                "provider": type(trace.get_tracer_provider()).__name__,
            }))
    shutdown_telemetry()
    """
)


def _probe(trace_file: str) -> dict[str, object]:
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT, trace_file], capture_output=True, text=True, check=True, timeout=60
    )
    result: dict[str, object] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def test_without_any_exporter_spans_are_not_recorded_and_no_sdk_provider_is_installed() -> None:
    got = _probe("")
    assert got == {"recording": False, "current_is_inner": False, "provider": "ProxyTracerProvider"}


def test_with_a_trace_file_tracers_made_before_set_up_record_and_export(tmp_path: Path) -> None:
    path = tmp_path / "spans.jsonl"
    got = _probe(str(path))
    assert got == {"recording": True, "current_is_inner": True, "provider": "TracerProvider"}
    spans = [json.loads(line) for line in path.read_text().splitlines()]
    by_name = {s["name"]: s for s in spans}
    assert set(by_name) == {"outer", "inner"}
    assert by_name["inner"]["parent_span_id"] == by_name["outer"]["span_id"]
    assert by_name["outer"]["attributes"] == {"k": 1}
