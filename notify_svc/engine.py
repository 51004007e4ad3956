"""The notification use cases — Decide, DecideBatch, RecordOutcome — over a policy, a store and a clock.

Validation happens here, so the servicer only converts protos. In a batch, one bad candidate does
not fail the chunk: it becomes `DROP` with reason `invalid:<field>` (the NotificationCandidate
field name, e.g. `invalid:fan_time_zone`) and is neither recorded nor deduplicated. Only a chunk
that is malformed as a whole (more than `max_chunk` candidates) fails with INVALID_ARGUMENT.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta

from kindred import telemetry_schema as schema
from kindred.errors import InvalidArgument
from kindred.telemetry import get_tracer
from notify_svc.domain import (
    Action,
    Candidate,
    CandidateFields,
    Decision,
    FanState,
    Verdict,
    validate_candidate,
    validate_outcome,
)
from notify_svc.policy import DecisionPolicy
from notify_svc.state import NotifyState

Clock = Callable[[], datetime]

# Bounds one chunk's transaction / pipeline; fan-out callers stream many chunks of this size or less.
MAX_CHUNK = 10_000


def utc_now() -> datetime:
    return datetime.now(UTC)


class NotifyEngine:
    def __init__(
        self,
        state: NotifyState,
        policy: DecisionPolicy,
        *,
        max_future_skew: timedelta = timedelta(days=1),
        clock: Clock = utc_now,
        max_chunk: int = MAX_CHUNK,
    ) -> None:
        self.state = state
        self.policy = policy
        self._max_future_skew = max_future_skew
        self._clock = clock
        self._max_chunk = max_chunk
        self._tracer = get_tracer(__name__)

    def decide(self, raw: CandidateFields) -> Decision:
        """Decides one candidate; bad input raises InvalidArgument naming `candidate.<field>`."""
        now = self._clock()
        candidate = validate_candidate(raw, now, self._max_future_skew)
        with self._tracer.start_as_current_span(schema.SPAN_NOTIFY_DECIDE) as span:
            span.set_attribute(schema.FAN_ID, candidate.fan_id)
            return self.state.decide([candidate], self._decide_at(now), now)[0]

    def decide_batch(self, raws: Sequence[CandidateFields]) -> list[Decision]:
        """Decides a chunk in order; invalid candidates become DROP "invalid:<field>" (module doc)."""
        if len(raws) > self._max_chunk:
            raise InvalidArgument(
                "candidates", f"at most {self._max_chunk} candidates per chunk, got {len(raws)}"
            )
        now = self._clock()
        out: list[Decision | None] = [None] * len(raws)
        valid: list[Candidate] = []
        positions: list[int] = []
        for i, raw in enumerate(raws):
            try:
                valid.append(validate_candidate(raw, now, self._max_future_skew, prefix=""))
                positions.append(i)
            except InvalidArgument as exc:
                out[i] = Decision(raw.notification_id, Action.DROP, f"invalid:{exc.field}")
        with self._tracer.start_as_current_span(schema.SPAN_NOTIFY_DECIDE) as span:
            span.set_attribute(schema.BATCH_SIZE, len(raws))
            for i, decision in zip(
                positions, self.state.decide(valid, self._decide_at(now), now), strict=True
            ):
                out[i] = decision
        return [d for d in out if d is not None]

    def record_outcome(
        self, notification_id: str, fan_id: str, outcome: int, occurred_at: datetime | None
    ) -> None:
        self.state.record_outcome(
            validate_outcome(notification_id, fan_id, outcome, occurred_at, self._clock())
        )

    def _decide_at(self, now: datetime) -> Callable[[Candidate, FanState], Verdict]:
        policy = self.policy

        def decide(candidate: Candidate, fan: FanState) -> Verdict:
            return policy.decide(candidate, fan, now)

        return decide
