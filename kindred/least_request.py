"""Least-request balancing over several gRPC targets: each call goes to the backend with the fewest calls
in flight from this client.

Why not gRPC's round_robin: it alternates calls regardless of how busy each backend is. Search replicas
(retrieval_svc.search.replication) answer one engine query at a time (qdrant-edge holds the GIL), so a
replica that got two calls in a row queues the second for a whole search while another replica idles;
with a few callers in flight that imbalance, not the work itself, makes the tail. Envoy's LEAST_REQUEST
and Finagle's power-of-two-choices balancers answer the same problem; with the handful of backends a
client here names, every one is compared, not two. Ties rotate, so an idle client still alternates.

A backend whose channel is in TRANSIENT_FAILURE (its process is gone) is skipped while another is not:
a dead backend fails calls instantly and would otherwise look the least loaded. A call a backend refuses
with UNAVAILABLE (nothing was done: see kindred.grpc_client's retry policy) is retried once on another
backend, counted (`kindred.grpc.client.retried_elsewhere`, by the refusing backend's target), and
that backend is passed over for EJECT_S (outlier ejection, as Envoy does): every refused call costs a
round trip and the channel's own retries, which should not be paid again on the next call.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import grpc
from opentelemetry.metrics import Meter

from kindred import telemetry_schema as schema
from kindred.telemetry import get_meter

_DOWN = (grpc.ChannelConnectivity.TRANSIENT_FAILURE, grpc.ChannelConnectivity.SHUTDOWN)
EJECT_S = 1.0  # how long a backend that refused a call is passed over while another is available


def split_targets(target: str) -> list[str]:
    """The backends a target names, each a gRPC target of its own.

    "ipv4:10.0.0.1:50051,10.0.0.2:50051" (gRPC's syntax for several addresses) → one "ipv4:<address>"
    target per address; "search-0.search:50051,search-1.search:50051" (comma-separated targets, e.g. a
    StatefulSet's pod names) → each part; anything else (one address, or one DNS name) → itself.
    """
    scheme, sep, rest = target.partition(":")
    if sep and scheme in ("ipv4", "ipv6") and "," in rest:
        return [f"{scheme}:{address.strip()}" for address in rest.split(",") if address.strip()]
    if "," in target:
        return [part.strip() for part in target.split(",") if part.strip()]
    return [target]


class LeastRequestChannel(grpc.Channel):
    """A grpc.Channel over one channel per backend; every call picks the backend with the fewest in
    flight (see the module docstring). Thread-safe: meant to be shared by every thread of a client."""

    def __init__(
        self, channels: Sequence[grpc.Channel], names: Sequence[str], *, meter: Meter | None = None
    ) -> None:
        if not channels or len(names) != len(channels):
            raise ValueError("LeastRequestChannel needs one name per channel, and at least one channel")
        self._channels = list(channels)
        self.names = list(names)
        self._retried = (meter or get_meter(__name__)).create_counter(schema.METRIC_RETRIED_ELSEWHERE)
        self._in_flight = [0] * len(self._channels)
        self._state: list[grpc.ChannelConnectivity | None] = [None] * len(self._channels)
        self._ejected_until = [0.0] * len(self._channels)  # time.monotonic()
        self._lock = threading.Lock()
        self._next = 0  # where the next tie-break starts
        self._watchers = [self._watcher(i) for i in range(len(self._channels))]
        for channel, watch in zip(self._channels, self._watchers, strict=True):
            channel.subscribe(watch, try_to_connect=True)

    def _watcher(self, i: int) -> Callable[[grpc.ChannelConnectivity], None]:
        def watch(state: grpc.ChannelConnectivity) -> None:
            self._state[i] = state

        return watch

    @property
    def in_flight(self) -> list[int]:
        """Calls in flight per backend (a snapshot; for tests and metrics)."""
        with self._lock:
            return list(self._in_flight)

    def acquire(self, avoid: int | None = None) -> int:
        """Picks a backend for one call and counts the call in flight on it (release() ends it)."""
        n = len(self._channels)
        now = time.monotonic()
        with self._lock:
            up = [
                i
                for i in range(n)
                if i != avoid and self._state[i] not in _DOWN and self._ejected_until[i] <= now
            ]
            if not up:  # every other backend looks down or refused lately: try them anyway
                up = [i for i in range(n) if i != avoid] or list(range(n))
            start = self._next
            best = min(up, key=lambda i: (self._in_flight[i], (i - start) % n))
            self._next = (best + 1) % n
            self._in_flight[best] += 1
            return best

    def release(self, i: int) -> None:
        with self._lock:
            self._in_flight[i] -= 1

    def refused(self, i: int) -> None:
        """Backend i refused a call as UNAVAILABLE; it is being retried on another."""
        with self._lock:
            self._ejected_until[i] = time.monotonic() + EJECT_S
        self._retried.add(1, {schema.BACKEND: self.names[i]})

    # -- grpc.Channel -------------------------------------------------------------------------------

    def subscribe(
        self, callback: Callable[[grpc.ChannelConnectivity], None], try_to_connect: bool = False
    ) -> None:
        for channel in self._channels:
            channel.subscribe(callback, try_to_connect=try_to_connect)

    def unsubscribe(self, callback: Callable[[grpc.ChannelConnectivity], None]) -> None:
        for channel in self._channels:
            channel.unsubscribe(callback)

    def _per_backend(self, kind: str, method: str, *args: Any) -> list[Any]:
        """The multicallable of `kind` (unary_unary, ...) for `method` on every backend's channel."""
        return [getattr(c, kind)(method, *args) for c in self._channels]

    def unary_unary(
        self,
        method: str,
        request_serializer: Any = None,
        response_deserializer: Any = None,
        _registered_method: bool = False,
    ) -> grpc.UnaryUnaryMultiCallable:
        args = (request_serializer, response_deserializer, _registered_method)
        return _UnaryUnary(self, self._per_backend("unary_unary", method, *args))

    def unary_stream(
        self,
        method: str,
        request_serializer: Any = None,
        response_deserializer: Any = None,
        _registered_method: bool = False,
    ) -> grpc.UnaryStreamMultiCallable:
        args = (request_serializer, response_deserializer, _registered_method)
        return _Streaming(self, self._per_backend("unary_stream", method, *args))  # type: ignore[return-value]

    def stream_unary(
        self,
        method: str,
        request_serializer: Any = None,
        response_deserializer: Any = None,
        _registered_method: bool = False,
    ) -> grpc.StreamUnaryMultiCallable:
        args = (request_serializer, response_deserializer, _registered_method)
        return _Streaming(self, self._per_backend("stream_unary", method, *args))  # type: ignore[return-value]

    def stream_stream(
        self,
        method: str,
        request_serializer: Any = None,
        response_deserializer: Any = None,
        _registered_method: bool = False,
    ) -> grpc.StreamStreamMultiCallable:
        args = (request_serializer, response_deserializer, _registered_method)
        return _Streaming(self, self._per_backend("stream_stream", method, *args))  # type: ignore[return-value]

    def close(self) -> None:
        for channel, watch in zip(self._channels, self._watchers, strict=True):
            channel.unsubscribe(watch)
            channel.close()

    def __enter__(self) -> LeastRequestChannel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _unavailable(exc: grpc.RpcError) -> bool:
    code = getattr(exc, "code", None)
    return callable(code) and code() == grpc.StatusCode.UNAVAILABLE


class _UnaryUnary(grpc.UnaryUnaryMultiCallable):
    def __init__(self, pool: LeastRequestChannel, calls: Sequence[Any]) -> None:
        self._pool = pool
        self._calls = calls

    def _blocking(self, name: str, request: Any, kwargs: dict[str, Any]) -> Any:
        i = self._pool.acquire()
        try:
            return getattr(self._calls[i], name)(request, **kwargs)
        except grpc.RpcError as exc:
            if not _unavailable(exc) or len(self._calls) == 1:
                raise
        finally:
            self._pool.release(i)
        self._pool.refused(i)
        j = self._pool.acquire(avoid=i)  # refused, nothing done: once more, elsewhere
        try:
            return getattr(self._calls[j], name)(request, **kwargs)
        finally:
            self._pool.release(j)

    def __call__(self, request: Any, **kwargs: Any) -> Any:
        return self._blocking("__call__", request, kwargs)

    def with_call(self, request: Any, **kwargs: Any) -> Any:
        return self._blocking("with_call", request, kwargs)

    def future(self, request: Any, **kwargs: Any) -> Any:
        i = self._pool.acquire()
        try:
            fut = self._calls[i].future(request, **kwargs)
        except BaseException:
            self._pool.release(i)
            raise
        fut.add_done_callback(lambda _f: self._pool.release(i))
        return fut


class _Streaming:
    """Streaming calls: the least-loaded backend at the start, counted until the call terminates."""

    def __init__(self, pool: LeastRequestChannel, calls: Sequence[Any]) -> None:
        self._pool = pool
        self._calls = calls

    def _start(self, name: str | None, arg: Any, kwargs: dict[str, Any]) -> Any:
        i = self._pool.acquire()
        try:
            target = self._calls[i] if name is None else getattr(self._calls[i], name)
            call = target(arg, **kwargs)
        except BaseException:
            self._pool.release(i)
            raise
        if isinstance(call, tuple):  # stream_unary.with_call: (response, call), already finished
            self._pool.release(i)
        elif hasattr(call, "add_callback"):
            if not call.add_callback(lambda: self._pool.release(i)):
                self._pool.release(i)  # already terminated: the callback will not run
        elif hasattr(call, "add_done_callback"):
            call.add_done_callback(lambda _f: self._pool.release(i))
        else:  # a plain response (stream_unary called blocking): done
            self._pool.release(i)
        return call

    def __call__(self, arg: Any, **kwargs: Any) -> Any:
        return self._start(None, arg, kwargs)

    def with_call(self, arg: Any, **kwargs: Any) -> Any:
        return self._start("with_call", arg, kwargs)

    def future(self, arg: Any, **kwargs: Any) -> Any:
        return self._start("future", arg, kwargs)
