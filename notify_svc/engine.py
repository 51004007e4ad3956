"""The notification use cases — Decide, DecideBatch, RecordOutcome, CollectDue/AckDue — over a
policy, a store, a clock and an optional volume controller.

Scoring is vectorised: the store hands the engine waves of candidates with their fans' states and
the engine scores each wave with one `policy.decide_many` call when the policy has one (the learned
policy: one ONNX run per wave), else candidate by candidate.

Validation happens here, so the servicer only converts protos. In a batch, one bad candidate does
not fail the chunk: it becomes `DROP` with reason `invalid:<field>` (the NotificationCandidate
field name, e.g. `invalid:fan_time_zone`) and is neither recorded nor deduplicated. Only a chunk
that is malformed as a whole (more than `max_chunk` candidates) fails with INVALID_ARGUMENT.

Feedback (`feedback=True`, as the service runs): a policy with engagement hooks (the learned policy,
`FeedbackPolicy`) hears of every fresh SEND_NOW when it is recorded, of delayed and digest items when
AckDue confirms them delivered, and of every RecordOutcome event — so its fan features stay live.
Acks are matched to the items this process handed out in CollectDue (claims are kept until their lease
ends); an ack for a claim collected by another replica updates the store but not this policy.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Protocol, runtime_checkable

from kindred import telemetry_schema as schema
from kindred.errors import InvalidArgument
from kindred.telemetry import get_tracer
from notify_svc import delivery
from notify_svc.controller import Thresholded, VolumeController
from notify_svc.domain import (
    Action,
    Candidate,
    CandidateFields,
    Channel,
    Decision,
    DueNotification,
    FanState,
    OutcomeEvent,
    Trigger,
    Verdict,
    validate_candidate,
    validate_outcome,
)
from notify_svc.policy import DecisionPolicy
from notify_svc.state import DecideManyFn, NotifyState, per_candidate

Clock = Callable[[], datetime]
log = logging.getLogger(__name__)

# Bounds one chunk's transaction / pipeline; fan-out callers stream many chunks of this size or less.
MAX_CHUNK = 10_000


def utc_now() -> datetime:
    return datetime.now(UTC)


@runtime_checkable
class FeedbackPolicy(Protocol):
    """A policy that learns from deliveries and outcomes (the learned policy's engagement history)."""

    def record_deliveries(self, candidates: Sequence[Candidate], at: datetime) -> None: ...

    def record_outcome(self, event: OutcomeEvent) -> None: ...


@runtime_checkable
class BatchDecisionPolicy(Protocol):
    """A policy that scores many candidates at once (the learned policy)."""

    def decide_many(
        self, candidates: Sequence[Candidate], fans: Sequence[FanState], now: datetime
    ) -> list[Verdict]: ...


class NotifyEngine:
    def __init__(
        self,
        state: NotifyState,
        policy: DecisionPolicy,
        *,
        max_future_skew: timedelta = timedelta(days=1),
        clock: Clock = utc_now,
        max_chunk: int = MAX_CHUNK,
        controller: VolumeController | None = None,
        feedback: bool = False,
        policy_label: str = "",
    ) -> None:
        self.state = state
        self.policy = policy
        self.controller = controller
        # Off for callers that feed the policy's history themselves (the simulator's agents).
        self.feedback: FeedbackPolicy | None = (
            policy if feedback and isinstance(policy, FeedbackPolicy) else None
        )
        # On every decide span, e.g. "rules" or "learned:<model version>".
        self.policy_label = policy_label or type(policy).__name__
        self._claims: dict[str, DueNotification] = {}  # claim id → what this process handed out
        self._claims_lock = threading.Lock()
        if controller is not None and not isinstance(policy, Thresholded):
            raise ValueError("a volume controller needs a policy with a settable threshold")
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
            span.set_attribute(schema.NOTIFY_POLICY, self.policy_label)
            return self._decide([candidate], now)[0]

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
            span.set_attribute(schema.NOTIFY_POLICY, self.policy_label)
            for i, decision in zip(positions, self._decide(valid, now), strict=True):
                out[i] = decision
        return [d for d in out if d is not None]

    def record_outcome(
        self, notification_id: str, fan_id: str, outcome: int, occurred_at: datetime | None
    ) -> None:
        event = validate_outcome(notification_id, fan_id, outcome, occurred_at, self._clock())
        self.state.record_outcome(event)
        if self.feedback is not None:
            self.feedback.record_outcome(event)

    def collect_due(
        self, now: datetime | None, limit: int, worker_id: str, lease_seconds: int
    ) -> list[DueNotification]:
        """Claims due delayed items and digests (delivery.py has the semantics)."""
        server_now = self._clock()
        if now is not None and now - server_now > self._max_future_skew:
            raise InvalidArgument("now", f"more than {self._max_future_skew} ahead of the server clock")
        count, lease = delivery.validate_collect(limit, worker_id, lease_seconds)
        with self._tracer.start_as_current_span(schema.SPAN_NOTIFY_COLLECT_DUE) as span:
            claimed = self.state.collect_due(now or server_now, count, worker_id, lease)
            span.set_attribute(schema.BATCH_SIZE, len(claimed))
        if self.feedback is not None and claimed:
            with self._claims_lock:
                # Expired claims can no longer be acked: drop them so the map stays bounded.
                for stale in [k for k, d in self._claims.items() if d.lease_expires_at < server_now]:
                    del self._claims[stale]
                self._claims.update((d.claim_id, d) for d in claimed)
        return claimed

    def ack_due(self, claim_id: str, notification_ids: Sequence[str]) -> int:
        if not claim_id:
            raise InvalidArgument("claim_id", "required")
        acked = self.state.ack_due(claim_id, notification_ids)
        if self.feedback is not None and acked:
            self._record_acked(self.feedback, claim_id, notification_ids, acked)
        return acked

    def _record_acked(
        self, feedback: FeedbackPolicy, claim_id: str, notification_ids: Sequence[str], acked: int
    ) -> None:
        """Tells the policy which acked items reached their fan (those this process handed out)."""
        with self._claims_lock:
            due = self._claims.get(claim_id)
        if due is None:
            log.debug("ack of claim %s collected elsewhere: engagement history not updated", claim_id)
            return
        wanted = set(notification_ids)
        items = [item for item in due.items if item.notification_id in wanted]
        if acked != len(items):
            # Part of the claim was taken over: the store does not say which items this ack removed.
            log.warning("claim %s: %d of %d items acked; history not updated", claim_id, acked, len(items))
            return
        with self._claims_lock:
            self._claims.pop(claim_id, None)
        at = self._clock()
        zone = self.state.fan_state(due.fan_id, at).time_zone
        delivered = [
            Candidate(
                item.notification_id,
                item.fan_id,
                item.creator_id,
                item.post_id,
                Trigger(item.trigger),
                Channel(item.channel),
                at,
                zone,
            )
            for item in items
        ]
        feedback.record_deliveries(delivered, at)

    def _decide(self, candidates: Sequence[Candidate], now: datetime) -> list[Decision]:
        decisions = self.state.decide(candidates, self._decide_many_at(now), now)
        if self.controller is not None and isinstance(self.policy, Thresholded):
            self.policy.threshold = self.controller.observe(decisions, now)
        if self.feedback is not None:
            sent = [
                c
                for c, d in zip(candidates, decisions, strict=True)
                if d.action is Action.SEND_NOW and not d.duplicate
            ]
            if sent:
                self.feedback.record_deliveries(sent, now)
        return decisions

    def _decide_many_at(self, now: datetime) -> DecideManyFn:
        policy = self.policy
        controller = self.controller
        score: DecideManyFn
        if isinstance(policy, BatchDecisionPolicy):
            batch = policy
            score = lambda cs, fs: batch.decide_many(cs, fs, now)  # noqa: E731
        else:
            score = per_candidate(lambda c, f: policy.decide(c, f, now))

        if controller is None:
            return score

        def score_controlled(candidates: Sequence[Candidate], fans: Sequence[FanState]) -> list[Verdict]:
            # The controller's state goes on the decision, so a replay explains itself too; a threshold
            # the policy stamped itself (the one it compared with) wins over the controller's current one.
            extra = controller.scores()
            return [
                dataclasses.replace(
                    v, decision=dataclasses.replace(v.decision, scores={**extra, **v.decision.scores})
                )
                for v in score(candidates, fans)
            ]

        return score_controlled
