"""One CPU-bound call at a time per service process: the rest wait their turn at a gate.

Why: a Kindred service's request path is Python holding the GIL (qdrant-edge keeps it for a whole
engine query too, bench/bench_engine_gil.py). When several such calls run at once on the gRPC worker
threads, they only take turns on the GIL: each finishes as late as the slowest, and the threads' hand-offs
cost CPU of their own. Letting one compute while the others wait (first come, first served) finishes
each sooner. Measured with `bench.latency.replica_sweep` on one host (2026-11-27 17:00 UTC, Intel Xeon,
2 cores): one co-located ranking process, p99 at 4 callers 33.4 / 33.3 ms with one worker thread against
37.5 / 38.2 with two; two replicas 21.3 / 21.6 against 31.0 / 31.5. In the mesh, retrieval with one
thread: 32.9 / 32.9 against 54.9 / 50.0 ms with its eight.

A gate rather than one worker thread: the gRPC thread pool also runs health checks, reflection streams
and the calls that wait on another service (ranking's Recommend on its retrieval hop, SearchRanked on
search, the writes on the search replicas' log); those must not queue behind computation, and a long
stream must not hold the only thread. So each service names the methods that only compute
(`ServiceSpec.gated_methods`), and only those pass the gate. KINDRED_COMPUTE_CONCURRENCY sets how many
may compute at once (default 1; 0 switches the gate off).

Only methods that hold the GIL from start to end belong behind it. A call with a long stretch of native
work that releases the GIL (retrieval's Search encodes its query in onnxruntime) overlaps usefully with
another call's Python: gating it gave up that overlap (bench.latency.search_gate_ab), so it is not gated.

A call whose deadline passed, or whose client went away, while it waited is not computed: it ends with
DEADLINE_EXCEEDED / CANCELLED at once, so a backlog drains instead of doing work nobody reads. The wait
is recorded (histogram kindred.compute_gate.wait, ms) and, when tracing, on the server span.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import grpc
from opentelemetry import trace

from kindred import telemetry_schema as schema
from kindred.telemetry import get_meter


class ComputeGate:
    """At most `limit` gated calls compute at once in this process; the others wait."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"a compute gate needs a limit >= 1, got {limit}")
        self.limit = limit
        self._slots = threading.BoundedSemaphore(limit)
        meter = get_meter(__name__)
        self._wait = meter.create_histogram(schema.METRIC_GATE_WAIT, unit="ms")
        self._dropped = meter.create_counter(schema.METRIC_GATE_DROPPED)

    def wrap(self, behavior: Callable[[Any, Any], Any], method: str) -> Callable[[Any, Any], Any]:
        """`behavior` (a unary handler) run only once it holds a slot."""

        def gated(request: Any, context: grpc.ServicerContext) -> Any:
            arrived = time.perf_counter()
            with self._slots:
                waited_ms = (time.perf_counter() - arrived) * 1000.0
                self._wait.record(waited_ms, {"rpc.method": method})
                trace.get_current_span().set_attribute(schema.GATE_WAIT_MS, waited_ms)
                dropped = _gone(context)
                if dropped is not None:
                    self._dropped.add(1, {"rpc.method": method, "rpc.grpc.status_code": dropped.name})
                    context.abort(dropped, f"{method}: dropped after {waited_ms:.1f} ms waiting to compute")
                return behavior(request, context)

        return gated


def _gone(context: grpc.ServicerContext | None) -> grpc.StatusCode | None:
    """Why the call should not be computed any more, if it should not."""
    if context is None:  # in-process callers (tests, benchmarks) pass no context
        return None
    remaining = context.time_remaining()
    if remaining is not None and remaining <= 0:
        return grpc.StatusCode.DEADLINE_EXCEEDED
    if not context.is_active():
        return grpc.StatusCode.CANCELLED
    return None


def make_gate(concurrency: int) -> ComputeGate | None:
    """The gate KINDRED_COMPUTE_CONCURRENCY asks for: None when it is 0 (no gate)."""
    return ComputeGate(concurrency) if concurrency > 0 else None


__all__ = ["ComputeGate", "make_gate"]
