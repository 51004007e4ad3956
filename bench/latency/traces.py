"""Per-stage durations from span files (kindred.telemetry.JsonLinesSpanExporter: one JSON span a line).

Spans are grouped by trace; only traces whose root span's name ends with `root_suffix` count (one
Recommend request each — health checks and other calls have their own traces). Within a trace, spans
are grouped by *stage key*: the span name, qualified where one name covers several stages —
`onnx.run[ranker]` / `onnx.run[two_tower_user]` (model name), `qdrant.query[two_tower]` (candidate
source), `online_store.get[fan]` (namespace, or the service when the span names none), and
`server <rpc>` / `client <rpc>` for the gRPC instrumentation's spans.

For each stage and each trace, `inclusive` is the summed duration of that stage's spans in the trace
(a stage may run several times in one request, or not at all), and `exclusive` the same minus the time
spent in the spans' direct children: what the stage did itself. Exclusive times of all stages of a
trace add up to its root span's duration (the children here never run in parallel), which is what
makes a "where the time goes" table out of them.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from bench.latency.stats import summarize_ms

Span = Mapping[str, Any]
MODEL_ATTR = "kindred.model.name"
SOURCE_ATTR = "kindred.retrieval.source"
NAMESPACE_ATTR = "kindred.online_store.namespace"


def read_spans(path: Path) -> list[dict[str, Any]]:
    """Every span in a JSON-lines file; a torn last line (a writer killed mid-line) is skipped."""
    out: list[dict[str, Any]] = []
    if not path.exists():
        return out
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


def stage_key(span: Span) -> str:
    name = str(span["name"])
    attrs: Mapping[str, Any] = span.get("attributes") or {}
    kind = str(span.get("kind", "INTERNAL"))
    if kind in ("SERVER", "CLIENT"):
        return f"{kind.lower()} {name}"
    if name == "onnx.run":
        return f"onnx.run[{attrs.get(MODEL_ATTR, '?')}]"
    if name == "qdrant.query":
        return f"qdrant.query[{attrs.get(SOURCE_ATTR, '?')}]"
    if name == "online_store.get":
        return f"online_store.get[{attrs.get(NAMESPACE_ATTR) or span.get('service', '?')}]"
    return name


def _duration_s(span: Span) -> float:
    return max(0, int(span["end_ns"]) - int(span["start_ns"])) / 1e9


def request_traces(spans: Iterable[Span], root_suffix: str = "/Recommend") -> dict[str, list[Span]]:
    """trace_id → its spans, for traces whose root span (no parent) is named ...`root_suffix`."""
    by_trace: dict[str, list[Span]] = defaultdict(list)
    for s in spans:
        by_trace[str(s["trace_id"])].append(s)
    out = {}
    for trace_id, group in by_trace.items():
        roots = [s for s in group if not s.get("parent_span_id")]
        if len(roots) == 1 and str(roots[0]["name"]).endswith(root_suffix):
            out[trace_id] = group
    return out


def per_trace_stage_times(trace: Sequence[Span]) -> dict[str, tuple[float, float, int]]:
    """stage key → (inclusive s, exclusive s, number of spans) within one trace."""
    child_time: dict[str, float] = defaultdict(float)
    for s in trace:
        parent = s.get("parent_span_id")
        if parent:
            child_time[str(parent)] += _duration_s(s)
    out: dict[str, tuple[float, float, int]] = {}
    for s in trace:
        key = stage_key(s)
        d = _duration_s(s)
        excl = max(0.0, d - child_time.get(str(s["span_id"]), 0.0))
        inc0, exc0, n0 = out.get(key, (0.0, 0.0, 0))
        out[key] = (inc0 + d, exc0 + excl, n0 + 1)
    return out


def stage_breakdown(spans: Iterable[Span], root_suffix: str = "/Recommend") -> dict[str, Any]:
    """{"requests": n, "root": key, "stages": {key: {...}}} over the request traces in `spans`.

    Each stage: "service", "in_requests" (traces containing it), "spans_per_request" (mean over those),
    "inclusive" (summary in ms over the traces containing it), "exclusive_mean_ms" (mean over ALL
    request traces, so these add up to the root's mean), and "share_of_root" (that mean / root mean).
    """
    traces = request_traces(spans, root_suffix)
    if not traces:
        return {"requests": 0, "root": None, "stages": {}}
    inclusive: dict[str, list[float]] = defaultdict(list)
    exclusive_sum: dict[str, float] = defaultdict(float)
    counts: dict[str, int] = defaultdict(int)
    service: dict[str, str] = {}
    root_key = ""
    for group in traces.values():
        root = next(s for s in group if not s.get("parent_span_id"))
        root_key = stage_key(root)
        for s in group:
            service.setdefault(stage_key(s), str(s.get("service", "")))
        for key, (inc, exc, n) in per_trace_stage_times(group).items():
            inclusive[key].append(inc)
            exclusive_sum[key] += exc
            counts[key] += n
    n_req = len(traces)
    root_mean = sum(inclusive[root_key]) / n_req if inclusive[root_key] else 0.0
    stages = {}
    for key in sorted(inclusive, key=lambda k: -sum(inclusive[k]) / n_req):
        excl_mean = exclusive_sum[key] / n_req
        stages[key] = {
            "service": service.get(key, ""),
            "in_requests": len(inclusive[key]),
            "spans_per_request": counts[key] / len(inclusive[key]),
            "inclusive": summarize_ms(inclusive[key]),
            "exclusive_mean_ms": excl_mean * 1000.0,
            "share_of_root": excl_mean / root_mean if root_mean > 0 else 0.0,
        }
    return {"requests": n_req, "root": root_key, "stages": stages}
