"""Domain errors. Each declares the gRPC status it maps to, by name, so domain code never imports grpc.

The one error interceptor (kindred.grpc_server) turns these into status codes at the edge.
"""

from __future__ import annotations


class KindredError(Exception):
    """Base class: a failure a caller can act on. `status` is a grpc.StatusCode name."""

    status: str = "INTERNAL"


class InvalidArgument(KindredError):
    """The request is malformed; `field` names the offending field (e.g. "candidate.fan_id")."""

    status = "INVALID_ARGUMENT"

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


class NotFound(KindredError):
    status = "NOT_FOUND"


class FailedPrecondition(KindredError):
    """The system is not in a state to serve this (e.g. no model loaded)."""

    status = "FAILED_PRECONDITION"


class Unavailable(KindredError):
    """A dependency is down; retrying later may succeed."""

    status = "UNAVAILABLE"


class Unimplemented(KindredError):
    """A method or option this version does not serve yet; the message says when it will."""

    status = "UNIMPLEMENTED"


class ModelMismatch(FailedPrecondition):
    """A model's manifest does not match what the server feeds it; the server refuses to load it."""


def validate_count(value: int, maximum: int, *, field: str = "k", default: int | None = None) -> int:
    """A requested page size / count: 1..maximum, or 0 meaning `default` when one is given.

    One check for every RPC that takes a `k`, so the messages (and the 0-means-default rule) agree.
    """
    if value == 0 and default is not None:
        return default
    if not 1 <= value <= maximum:
        zero = f" (0 = {default})" if default is not None else ""
        raise InvalidArgument(field, f"must be between 1 and {maximum}{zero}, got {value}")
    return value
