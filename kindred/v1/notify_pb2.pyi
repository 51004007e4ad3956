import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class TriggerType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TRIGGER_TYPE_UNSPECIFIED: _ClassVar[TriggerType]
    TRIGGER_TYPE_NEW_POST: _ClassVar[TriggerType]
    TRIGGER_TYPE_LIVE_STARTED: _ClassVar[TriggerType]
    TRIGGER_TYPE_CREATOR_RECOMMENDATION: _ClassVar[TriggerType]
    TRIGGER_TYPE_COMMENT_REPLY: _ClassVar[TriggerType]
    TRIGGER_TYPE_PAYMENT_FAILED: _ClassVar[TriggerType]
    TRIGGER_TYPE_MEMBERSHIP_CHANGED: _ClassVar[TriggerType]

class Channel(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CHANNEL_UNSPECIFIED: _ClassVar[Channel]
    CHANNEL_PUSH: _ClassVar[Channel]
    CHANNEL_EMAIL: _ClassVar[Channel]
    CHANNEL_IN_APP: _ClassVar[Channel]

class Action(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ACTION_UNSPECIFIED: _ClassVar[Action]
    ACTION_SEND_NOW: _ClassVar[Action]
    ACTION_DELAY_UNTIL: _ClassVar[Action]
    ACTION_DIGEST: _ClassVar[Action]
    ACTION_DROP: _ClassVar[Action]

class Outcome(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    OUTCOME_UNSPECIFIED: _ClassVar[Outcome]
    OUTCOME_DELIVERED: _ClassVar[Outcome]
    OUTCOME_OPENED: _ClassVar[Outcome]
    OUTCOME_DISMISSED: _ClassVar[Outcome]
    OUTCOME_DISABLED: _ClassVar[Outcome]

class DueKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DUE_KIND_UNSPECIFIED: _ClassVar[DueKind]
    DUE_KIND_DELAYED: _ClassVar[DueKind]
    DUE_KIND_DIGEST: _ClassVar[DueKind]
TRIGGER_TYPE_UNSPECIFIED: TriggerType
TRIGGER_TYPE_NEW_POST: TriggerType
TRIGGER_TYPE_LIVE_STARTED: TriggerType
TRIGGER_TYPE_CREATOR_RECOMMENDATION: TriggerType
TRIGGER_TYPE_COMMENT_REPLY: TriggerType
TRIGGER_TYPE_PAYMENT_FAILED: TriggerType
TRIGGER_TYPE_MEMBERSHIP_CHANGED: TriggerType
CHANNEL_UNSPECIFIED: Channel
CHANNEL_PUSH: Channel
CHANNEL_EMAIL: Channel
CHANNEL_IN_APP: Channel
ACTION_UNSPECIFIED: Action
ACTION_SEND_NOW: Action
ACTION_DELAY_UNTIL: Action
ACTION_DIGEST: Action
ACTION_DROP: Action
OUTCOME_UNSPECIFIED: Outcome
OUTCOME_DELIVERED: Outcome
OUTCOME_OPENED: Outcome
OUTCOME_DISMISSED: Outcome
OUTCOME_DISABLED: Outcome
DUE_KIND_UNSPECIFIED: DueKind
DUE_KIND_DELAYED: DueKind
DUE_KIND_DIGEST: DueKind

class NotificationCandidate(_message.Message):
    __slots__ = ("notification_id", "fan_id", "creator_id", "post_id", "trigger", "channel", "created_at", "fan_time_zone", "fan_is_member", "membership_tier")
    NOTIFICATION_ID_FIELD_NUMBER: _ClassVar[int]
    FAN_ID_FIELD_NUMBER: _ClassVar[int]
    CREATOR_ID_FIELD_NUMBER: _ClassVar[int]
    POST_ID_FIELD_NUMBER: _ClassVar[int]
    TRIGGER_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    FAN_TIME_ZONE_FIELD_NUMBER: _ClassVar[int]
    FAN_IS_MEMBER_FIELD_NUMBER: _ClassVar[int]
    MEMBERSHIP_TIER_FIELD_NUMBER: _ClassVar[int]
    notification_id: str
    fan_id: str
    creator_id: str
    post_id: str
    trigger: TriggerType
    channel: Channel
    created_at: _timestamp_pb2.Timestamp
    fan_time_zone: str
    fan_is_member: bool
    membership_tier: int
    def __init__(self, notification_id: _Optional[str] = ..., fan_id: _Optional[str] = ..., creator_id: _Optional[str] = ..., post_id: _Optional[str] = ..., trigger: _Optional[_Union[TriggerType, str]] = ..., channel: _Optional[_Union[Channel, str]] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., fan_time_zone: _Optional[str] = ..., fan_is_member: _Optional[bool] = ..., membership_tier: _Optional[int] = ...) -> None: ...

class Decision(_message.Message):
    __slots__ = ("notification_id", "action", "deliver_at", "reason", "scores", "duplicate")
    class ScoresEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    NOTIFICATION_ID_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    DELIVER_AT_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    SCORES_FIELD_NUMBER: _ClassVar[int]
    DUPLICATE_FIELD_NUMBER: _ClassVar[int]
    notification_id: str
    action: Action
    deliver_at: _timestamp_pb2.Timestamp
    reason: str
    scores: _containers.ScalarMap[str, float]
    duplicate: bool
    def __init__(self, notification_id: _Optional[str] = ..., action: _Optional[_Union[Action, str]] = ..., deliver_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., reason: _Optional[str] = ..., scores: _Optional[_Mapping[str, float]] = ..., duplicate: _Optional[bool] = ...) -> None: ...

class DecideRequest(_message.Message):
    __slots__ = ("candidate",)
    CANDIDATE_FIELD_NUMBER: _ClassVar[int]
    candidate: NotificationCandidate
    def __init__(self, candidate: _Optional[_Union[NotificationCandidate, _Mapping]] = ...) -> None: ...

class DecideResponse(_message.Message):
    __slots__ = ("decision",)
    DECISION_FIELD_NUMBER: _ClassVar[int]
    decision: Decision
    def __init__(self, decision: _Optional[_Union[Decision, _Mapping]] = ...) -> None: ...

class DecideBatchRequest(_message.Message):
    __slots__ = ("candidates",)
    CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    candidates: _containers.RepeatedCompositeFieldContainer[NotificationCandidate]
    def __init__(self, candidates: _Optional[_Iterable[_Union[NotificationCandidate, _Mapping]]] = ...) -> None: ...

class DecideBatchResponse(_message.Message):
    __slots__ = ("decisions",)
    DECISIONS_FIELD_NUMBER: _ClassVar[int]
    decisions: _containers.RepeatedCompositeFieldContainer[Decision]
    def __init__(self, decisions: _Optional[_Iterable[_Union[Decision, _Mapping]]] = ...) -> None: ...

class RecordOutcomeRequest(_message.Message):
    __slots__ = ("notification_id", "fan_id", "outcome", "occurred_at")
    NOTIFICATION_ID_FIELD_NUMBER: _ClassVar[int]
    FAN_ID_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    OCCURRED_AT_FIELD_NUMBER: _ClassVar[int]
    notification_id: str
    fan_id: str
    outcome: Outcome
    occurred_at: _timestamp_pb2.Timestamp
    def __init__(self, notification_id: _Optional[str] = ..., fan_id: _Optional[str] = ..., outcome: _Optional[_Union[Outcome, str]] = ..., occurred_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class RecordOutcomeResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class CollectDueRequest(_message.Message):
    __slots__ = ("now", "limit", "worker_id", "lease_seconds")
    NOW_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    LEASE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    now: _timestamp_pb2.Timestamp
    limit: int
    worker_id: str
    lease_seconds: int
    def __init__(self, now: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., limit: _Optional[int] = ..., worker_id: _Optional[str] = ..., lease_seconds: _Optional[int] = ...) -> None: ...

class DueItem(_message.Message):
    __slots__ = ("notification_id", "creator_id", "post_id", "trigger", "channel", "deliver_at", "reason")
    NOTIFICATION_ID_FIELD_NUMBER: _ClassVar[int]
    CREATOR_ID_FIELD_NUMBER: _ClassVar[int]
    POST_ID_FIELD_NUMBER: _ClassVar[int]
    TRIGGER_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_FIELD_NUMBER: _ClassVar[int]
    DELIVER_AT_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    notification_id: str
    creator_id: str
    post_id: str
    trigger: TriggerType
    channel: Channel
    deliver_at: _timestamp_pb2.Timestamp
    reason: str
    def __init__(self, notification_id: _Optional[str] = ..., creator_id: _Optional[str] = ..., post_id: _Optional[str] = ..., trigger: _Optional[_Union[TriggerType, str]] = ..., channel: _Optional[_Union[Channel, str]] = ..., deliver_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., reason: _Optional[str] = ...) -> None: ...

class DueNotification(_message.Message):
    __slots__ = ("claim_id", "fan_id", "kind", "items", "lease_expires_at")
    CLAIM_ID_FIELD_NUMBER: _ClassVar[int]
    FAN_ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    LEASE_EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    claim_id: str
    fan_id: str
    kind: DueKind
    items: _containers.RepeatedCompositeFieldContainer[DueItem]
    lease_expires_at: _timestamp_pb2.Timestamp
    def __init__(self, claim_id: _Optional[str] = ..., fan_id: _Optional[str] = ..., kind: _Optional[_Union[DueKind, str]] = ..., items: _Optional[_Iterable[_Union[DueItem, _Mapping]]] = ..., lease_expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class AckDueRequest(_message.Message):
    __slots__ = ("claim_id", "notification_ids")
    CLAIM_ID_FIELD_NUMBER: _ClassVar[int]
    NOTIFICATION_IDS_FIELD_NUMBER: _ClassVar[int]
    claim_id: str
    notification_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, claim_id: _Optional[str] = ..., notification_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class AckDueResponse(_message.Message):
    __slots__ = ("acked",)
    ACKED_FIELD_NUMBER: _ClassVar[int]
    acked: int
    def __init__(self, acked: _Optional[int] = ...) -> None: ...
