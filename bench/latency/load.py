"""A closed-loop load generator with bounded concurrency.

`run_closed_loop` starts `concurrency` caller threads. Each builds its own caller once (for gRPC: its
own channel and stub, so callers do not queue behind one another inside the client), runs its share
of the warm-up, waits at a barrier with the others, and then the measured phase begins: callers take
request numbers from one shared counter until `requests` were issued, each sending its next request
only when its previous one returned (closed loop: at most `concurrency` requests are ever in flight,
and the offered load adapts to the server's speed instead of piling up a queue). Request i uses
`items[i % len(items)]`, so with a deterministic item list every run sends the same sequence.

Latency is measured around the call only (time.perf_counter), throughput as successful requests over
the wall time of the measured phase (first start after the barrier → last completion).
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
import time
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

from bench.latency.stats import summarize_ms

T = TypeVar("T")
Caller = Callable[[T], object]
MAX_ERRORS_KEPT = 5


@dataclasses.dataclass
class LoadResult:
    concurrency: int
    latencies_s: list[float]  # seconds, successful requests only, grouped by caller
    wall_s: float
    errors: int
    error_samples: list[str]
    max_in_flight: int  # observed, to check the bound held

    @property
    def ok(self) -> int:
        return len(self.latencies_s)

    @property
    def throughput_rps(self) -> float:
        return self.ok / self.wall_s if self.wall_s > 0 else 0.0

    def summary(self) -> dict[str, float]:
        out = summarize_ms(self.latencies_s)
        out.update(
            concurrency=self.concurrency,
            errors=self.errors,
            wall_s=self.wall_s,
            throughput_rps=self.throughput_rps,
            max_in_flight=self.max_in_flight,
        )
        return out


class _Counter:
    """Hands out request numbers 0..limit-1 across threads; None once exhausted."""

    def __init__(self, limit: int) -> None:
        self._next = 0
        self._limit = limit
        self._lock = threading.Lock()

    def take(self) -> int | None:
        with self._lock:
            if self._next >= self._limit:
                return None
            n = self._next
            self._next += 1
            return n


class _InFlight:
    def __init__(self) -> None:
        self.now = 0
        self.peak = 0
        self._lock = threading.Lock()

    def enter(self) -> None:
        with self._lock:
            self.now += 1
            self.peak = max(self.peak, self.now)

    def leave(self) -> None:
        with self._lock:
            self.now -= 1


class _Worker(Generic[T]):
    def __init__(self, call: Caller[T]) -> None:
        self.call = call
        self.latencies: list[float] = []
        self.errors = 0
        self.error_samples: list[str] = []


def run_closed_loop(
    make_caller: Callable[[int], Caller[T]],
    items: Sequence[T],
    *,
    concurrency: int,
    requests: int,
    warmup: int = 0,
    clock: Callable[[], float] = time.perf_counter,
) -> LoadResult:
    """Issues `requests` calls (plus `warmup` unmeasured ones) from `concurrency` closed-loop callers.

    `make_caller(worker_index)` runs inside each caller thread before the warm-up. An exception from a
    call counts as an error (its latency is not recorded); an exception from `make_caller` aborts.
    """
    if concurrency < 1:
        raise ValueError(f"concurrency must be >= 1, got {concurrency}")
    if requests < 0 or warmup < 0:
        raise ValueError("requests and warmup must be >= 0")
    if not items:
        raise ValueError("need at least one item to send")
    warm = _Counter(warmup)
    measured = _Counter(requests)
    in_flight = _InFlight()
    barrier = threading.Barrier(concurrency + 1)
    workers: list[_Worker[T] | None] = [None] * concurrency
    setup_errors: list[BaseException] = []
    finished_at = [0.0] * concurrency

    def body(index: int) -> None:
        try:
            worker = _Worker(make_caller(index))
        except BaseException as exc:
            setup_errors.append(exc)
            barrier.abort()
            return
        workers[index] = worker
        while (n := warm.take()) is not None:
            # Other items than the measured ones first; a failing warm-up shows again when measured.
            with contextlib.suppress(Exception):
                worker.call(items[(requests + n) % len(items)])
        try:
            barrier.wait()
        except threading.BrokenBarrierError:
            return
        while (n := measured.take()) is not None:
            item = items[n % len(items)]
            in_flight.enter()
            t0 = clock()
            try:
                worker.call(item)
            except Exception as exc:
                worker.errors += 1
                if len(worker.error_samples) < MAX_ERRORS_KEPT:
                    worker.error_samples.append(f"{type(exc).__name__}: {exc}"[:300])
            else:
                worker.latencies.append(clock() - t0)
            finally:
                in_flight.leave()
        finished_at[index] = clock()

    threads = [threading.Thread(target=body, args=(i,), daemon=True) for i in range(concurrency)]
    for t in threads:
        t.start()
    try:
        barrier.wait()
    except threading.BrokenBarrierError:
        for t in threads:
            t.join()
        raise RuntimeError(f"a caller could not be set up: {setup_errors[0]!r}") from setup_errors[0]
    started = clock()
    for t in threads:
        t.join()
    wall = max(finished_at) - started
    done = [w for w in workers if w is not None]
    return LoadResult(
        concurrency=concurrency,
        latencies_s=[x for w in done for x in w.latencies],
        wall_s=max(wall, 0.0),
        errors=sum(w.errors for w in done),
        error_samples=[s for w in done for s in w.error_samples][:MAX_ERRORS_KEPT],
        max_in_flight=in_flight.peak,
    )


def time_calls(
    call: Callable[[T], object],
    items: Sequence[T],
    *,
    repeat: int = 1,
    warmup: int = 0,
    clock: Callable[[], float] = time.perf_counter,
) -> list[float]:
    """Sequential timings (seconds) of `call(item)` for each item, `repeat` times; for floor measurements."""
    for i in range(warmup):
        call(items[i % len(items)])
    out = []
    for _ in range(repeat):
        for item in items:
            t0 = clock()
            call(item)
            out.append(clock() - t0)
    return out
