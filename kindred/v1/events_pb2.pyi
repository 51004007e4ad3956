import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class EventType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EVENT_TYPE_UNSPECIFIED: _ClassVar[EventType]
    EVENT_TYPE_FOLLOW: _ClassVar[EventType]
    EVENT_TYPE_UNFOLLOW: _ClassVar[EventType]
    EVENT_TYPE_MEMBERSHIP_START: _ClassVar[EventType]
    EVENT_TYPE_MEMBERSHIP_END: _ClassVar[EventType]
    EVENT_TYPE_POST_VIEW: _ClassVar[EventType]
    EVENT_TYPE_POST_LIKE: _ClassVar[EventType]
    EVENT_TYPE_SEARCH: _ClassVar[EventType]
    EVENT_TYPE_SEARCH_CLICK: _ClassVar[EventType]
    EVENT_TYPE_NOTIFICATION_SENT: _ClassVar[EventType]
    EVENT_TYPE_NOTIFICATION_OPEN: _ClassVar[EventType]
    EVENT_TYPE_NOTIFICATION_DISABLE: _ClassVar[EventType]
    EVENT_TYPE_CREATOR_VIEW: _ClassVar[EventType]
EVENT_TYPE_UNSPECIFIED: EventType
EVENT_TYPE_FOLLOW: EventType
EVENT_TYPE_UNFOLLOW: EventType
EVENT_TYPE_MEMBERSHIP_START: EventType
EVENT_TYPE_MEMBERSHIP_END: EventType
EVENT_TYPE_POST_VIEW: EventType
EVENT_TYPE_POST_LIKE: EventType
EVENT_TYPE_SEARCH: EventType
EVENT_TYPE_SEARCH_CLICK: EventType
EVENT_TYPE_NOTIFICATION_SENT: EventType
EVENT_TYPE_NOTIFICATION_OPEN: EventType
EVENT_TYPE_NOTIFICATION_DISABLE: EventType
EVENT_TYPE_CREATOR_VIEW: EventType

class Event(_message.Message):
    __slots__ = ("event_id", "type", "fan_id", "creator_id", "post_id", "occurred_at", "query", "tier_id", "value", "attributes")
    class AttributesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    FAN_ID_FIELD_NUMBER: _ClassVar[int]
    CREATOR_ID_FIELD_NUMBER: _ClassVar[int]
    POST_ID_FIELD_NUMBER: _ClassVar[int]
    OCCURRED_AT_FIELD_NUMBER: _ClassVar[int]
    QUERY_FIELD_NUMBER: _ClassVar[int]
    TIER_ID_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    type: EventType
    fan_id: str
    creator_id: str
    post_id: str
    occurred_at: _timestamp_pb2.Timestamp
    query: str
    tier_id: str
    value: float
    attributes: _containers.ScalarMap[str, str]
    def __init__(self, event_id: _Optional[str] = ..., type: _Optional[_Union[EventType, str]] = ..., fan_id: _Optional[str] = ..., creator_id: _Optional[str] = ..., post_id: _Optional[str] = ..., occurred_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., query: _Optional[str] = ..., tier_id: _Optional[str] = ..., value: _Optional[float] = ..., attributes: _Optional[_Mapping[str, str]] = ...) -> None: ...

class LogEventsRequest(_message.Message):
    __slots__ = ("events",)
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[Event]
    def __init__(self, events: _Optional[_Iterable[_Union[Event, _Mapping]]] = ...) -> None: ...

class RejectedEvent(_message.Message):
    __slots__ = ("index", "event_id", "field", "reason")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    FIELD_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    index: int
    event_id: str
    field: str
    reason: str
    def __init__(self, index: _Optional[int] = ..., event_id: _Optional[str] = ..., field: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class LogEventsResponse(_message.Message):
    __slots__ = ("accepted", "duplicates", "rejected")
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    DUPLICATES_FIELD_NUMBER: _ClassVar[int]
    REJECTED_FIELD_NUMBER: _ClassVar[int]
    accepted: int
    duplicates: int
    rejected: _containers.RepeatedCompositeFieldContainer[RejectedEvent]
    def __init__(self, accepted: _Optional[int] = ..., duplicates: _Optional[int] = ..., rejected: _Optional[_Iterable[_Union[RejectedEvent, _Mapping]]] = ...) -> None: ...
