"""Notification domain types and input validation, free of gRPC and of any storage.

The enums mirror kindred.v1 notify.proto by value so the servicer converts with `Enum(int)`;
the domain never imports the generated code.
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from kindred.errors import InvalidArgument
from notify_svc.timezones import resolve_zone


class Trigger(enum.IntEnum):
    NEW_POST = 1
    LIVE_STARTED = 2
    CREATOR_RECOMMENDATION = 3
    COMMENT_REPLY = 4
    PAYMENT_FAILED = 10
    MEMBERSHIP_CHANGED = 11


class Channel(enum.IntEnum):
    UNSPECIFIED = 0
    PUSH = 1
    EMAIL = 2
    IN_APP = 3


class Action(enum.IntEnum):
    SEND_NOW = 1
    DELAY_UNTIL = 2
    DIGEST = 3
    DROP = 4


class Outcome(enum.IntEnum):
    DELIVERED = 1
    OPENED = 2
    DISMISSED = 3
    DISABLED = 4


# Paid membership tiers are 1..MAX_TIER (MAX_TIER = top); 0 = no tier.
MAX_TIER = 3


@dataclass(frozen=True)
class Relationship:
    """The fan's relationship to a creator, as the candidate's producer knows it (model features)."""

    member: bool = False
    tier: int = 0  # 0 = not a member, 1..MAX_TIER = paid tiers


@dataclass(frozen=True)
class CandidateFields:
    """A candidate exactly as received: nothing checked yet (the servicer's proto → domain step)."""

    notification_id: str
    fan_id: str
    creator_id: str = ""
    post_id: str = ""
    trigger: int = 0
    channel: int = 0
    created_at: datetime | None = None
    fan_time_zone: str = ""
    # None = not said (proto field unset); the relationship is stated when either is set.
    fan_is_member: bool | None = None
    membership_tier: int | None = None
    # Set by the proto layer when created_at is present but not a representable instant.
    created_at_invalid: bool = False


@dataclass(frozen=True)
class Candidate:
    """A validated notification candidate. `created_at` is aware UTC; `fan_time_zone` is "" or valid."""

    notification_id: str
    fan_id: str
    creator_id: str
    post_id: str
    trigger: Trigger
    channel: Channel
    created_at: datetime
    fan_time_zone: str = ""
    # The fan's relationship to the creator as the producer stated it; None = not stated (the
    # features then use what the service's engagement history knows, by default not a member).
    relationship: Relationship | None = None


@dataclass(frozen=True)
class Decision:
    notification_id: str
    action: Action
    reason: str
    deliver_at: datetime | None = None  # set for DELAY_UNTIL and DIGEST
    scores: dict[str, float] = field(default_factory=dict)
    duplicate: bool = False  # an idempotent replay of an earlier decision


@dataclass(frozen=True)
class Verdict:
    """A decision plus the state change it implies; the store applies both atomically.

    `send_at` is set when the decision spends fatigue budget (a non-transactional SEND_NOW or
    DELAY_UNTIL), at the instant of delivery. `claim_content` marks the candidate's content key
    as decided for the dedupe window.
    """

    decision: Decision
    send_at: datetime | None = None
    claim_content: bool = False


_COMPACT = json.JSONEncoder(separators=(",", ":"))


def content_key(candidate: Candidate) -> str:
    """The dedupe key of a candidate's content within one fan: (creator, post, trigger)."""
    # JSON keeps the key unambiguous whatever characters the ids contain.
    return _COMPACT.encode([candidate.creator_id, candidate.post_id, int(candidate.trigger)])


@dataclass(frozen=True)
class FanState:
    """What the policy may know about a fan when deciding one candidate.

    `sends` are the fan's non-transactional deliveries — sent or scheduled (DELAY_UNTIL) — inside
    the longest cap window, ascending; scheduled ones may lie in the future.
    `last_same_content` is when the same (creator, post, trigger) last produced a delivering
    decision for this fan, if within the dedupe window.
    """

    sends: tuple[datetime, ...] = ()
    opted_out: bool = False
    time_zone: str = ""  # the zone last seen on a candidate for this fan
    last_same_content: datetime | None = None


class DueKind(enum.IntEnum):
    DELAYED = 1  # one DELAY_UNTIL item
    DIGEST = 2  # every due DIGEST item of one fan, bundled


@dataclass(frozen=True)
class ScheduledItem:
    """A DELAY_UNTIL or DIGEST decision waiting in the store for its delivery time."""

    notification_id: str
    fan_id: str
    creator_id: str
    post_id: str
    trigger: int
    channel: int
    deliver_at: datetime
    reason: str
    kind: DueKind


def scheduled_item(candidate: Candidate, decision: Decision) -> ScheduledItem | None:
    """What the store keeps for later delivery, for a fresh DELAY_UNTIL or DIGEST decision."""
    if decision.action not in (Action.DELAY_UNTIL, Action.DIGEST) or decision.deliver_at is None:
        return None
    return ScheduledItem(
        notification_id=candidate.notification_id,
        fan_id=candidate.fan_id,
        creator_id=candidate.creator_id,
        post_id=candidate.post_id,
        trigger=int(candidate.trigger),
        channel=int(candidate.channel),
        deliver_at=decision.deliver_at,
        reason=decision.reason,
        kind=DueKind.DIGEST if decision.action is Action.DIGEST else DueKind.DELAYED,
    )


@dataclass(frozen=True)
class DueNotification:
    """One claimed delivery: a delayed item, or a fan's digest. Ack with `claim_id` before the lease ends."""

    claim_id: str
    fan_id: str
    kind: DueKind
    items: tuple[ScheduledItem, ...]
    lease_expires_at: datetime


@dataclass(frozen=True)
class OutcomeEvent:
    notification_id: str
    fan_id: str
    outcome: Outcome
    occurred_at: datetime


def validate_candidate(
    raw: CandidateFields, now: datetime, max_future_skew: timedelta, prefix: str = "candidate."
) -> Candidate:
    """Checks a received candidate; raises InvalidArgument naming the field (`prefix` + proto name)."""
    if not raw.notification_id:
        raise InvalidArgument(prefix + "notification_id", "required (it is the idempotency key)")
    if not raw.fan_id:
        raise InvalidArgument(prefix + "fan_id", "required")
    try:
        trigger = Trigger(raw.trigger)
    except ValueError:
        what = "must be set" if raw.trigger == 0 else f"unknown trigger type {raw.trigger}"
        raise InvalidArgument(prefix + "trigger", what) from None
    try:
        channel = Channel(raw.channel)
    except ValueError:
        raise InvalidArgument(prefix + "channel", f"unknown channel {raw.channel}") from None
    if raw.fan_time_zone:
        resolve_zone(raw.fan_time_zone, prefix + "fan_time_zone")
    if raw.created_at_invalid:
        raise InvalidArgument(prefix + "created_at", "not a valid timestamp")
    created_at = now if raw.created_at is None else _aware_utc(raw.created_at)
    if created_at - now > max_future_skew:
        raise InvalidArgument(
            prefix + "created_at", f"{created_at.isoformat()} is more than {max_future_skew} in the future"
        )
    return Candidate(
        notification_id=raw.notification_id,
        fan_id=raw.fan_id,
        creator_id=raw.creator_id,
        post_id=raw.post_id,
        trigger=trigger,
        channel=channel,
        created_at=created_at,
        fan_time_zone=raw.fan_time_zone,
        relationship=_relationship(raw, prefix),
    )


def _relationship(raw: CandidateFields, prefix: str) -> Relationship | None:
    if raw.fan_is_member is None and raw.membership_tier is None:
        return None
    member = bool(raw.fan_is_member)
    tier = raw.membership_tier or 0
    if not 0 <= tier <= MAX_TIER:
        raise InvalidArgument(prefix + "membership_tier", f"{tier} is not a tier: 0 (none) or 1..{MAX_TIER}")
    if tier > 0 and not member:
        raise InvalidArgument(prefix + "membership_tier", f"tier {tier} needs fan_is_member = true")
    return Relationship(member, tier)


def validate_outcome(
    notification_id: str, fan_id: str, outcome: int, occurred_at: datetime | None, now: datetime
) -> OutcomeEvent:
    """Checks a RecordOutcome request; `occurred_at` defaults to now."""
    if not fan_id:
        raise InvalidArgument("fan_id", "required")
    try:
        kind = Outcome(outcome)
    except ValueError:
        what = "must be set" if outcome == 0 else f"unknown outcome {outcome}"
        raise InvalidArgument("outcome", what) from None
    when = now if occurred_at is None else _aware_utc(occurred_at)
    return OutcomeEvent(notification_id=notification_id, fan_id=fan_id, outcome=kind, occurred_at=when)


def _aware_utc(instant: datetime) -> datetime:
    # A naive datetime from an in-process caller means UTC, never the host's local zone.
    return instant.replace(tzinfo=UTC) if instant.tzinfo is None else instant.astimezone(UTC)
