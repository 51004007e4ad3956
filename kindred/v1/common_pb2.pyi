import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class AccessLevel(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ACCESS_LEVEL_UNSPECIFIED: _ClassVar[AccessLevel]
    ACCESS_LEVEL_PUBLIC: _ClassVar[AccessLevel]
    ACCESS_LEVEL_MEMBERS: _ClassVar[AccessLevel]
    ACCESS_LEVEL_TIER: _ClassVar[AccessLevel]

class ItemKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ITEM_KIND_UNSPECIFIED: _ClassVar[ItemKind]
    ITEM_KIND_CREATOR: _ClassVar[ItemKind]
    ITEM_KIND_POST: _ClassVar[ItemKind]

class CandidateSource(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CANDIDATE_SOURCE_UNSPECIFIED: _ClassVar[CandidateSource]
    CANDIDATE_SOURCE_TWO_TOWER: _ClassVar[CandidateSource]
    CANDIDATE_SOURCE_POPULAR: _ClassVar[CandidateSource]
    CANDIDATE_SOURCE_ITEM_TO_ITEM: _ClassVar[CandidateSource]
    CANDIDATE_SOURCE_SOCIAL: _ClassVar[CandidateSource]
    CANDIDATE_SOURCE_FOLLOWED_FRESH: _ClassVar[CandidateSource]
    CANDIDATE_SOURCE_TRENDING: _ClassVar[CandidateSource]
    CANDIDATE_SOURCE_SEARCH_DENSE: _ClassVar[CandidateSource]
    CANDIDATE_SOURCE_SEARCH_SPARSE: _ClassVar[CandidateSource]
    CANDIDATE_SOURCE_SEARCH_HYBRID: _ClassVar[CandidateSource]
    CANDIDATE_SOURCE_MF: _ClassVar[CandidateSource]

class Surface(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SURFACE_UNSPECIFIED: _ClassVar[Surface]
    SURFACE_HOME: _ClassVar[Surface]
    SURFACE_EXPLORE: _ClassVar[Surface]
    SURFACE_CREATOR_PAGE: _ClassVar[Surface]
    SURFACE_SEARCH: _ClassVar[Surface]
    SURFACE_NOTIFICATION: _ClassVar[Surface]
ACCESS_LEVEL_UNSPECIFIED: AccessLevel
ACCESS_LEVEL_PUBLIC: AccessLevel
ACCESS_LEVEL_MEMBERS: AccessLevel
ACCESS_LEVEL_TIER: AccessLevel
ITEM_KIND_UNSPECIFIED: ItemKind
ITEM_KIND_CREATOR: ItemKind
ITEM_KIND_POST: ItemKind
CANDIDATE_SOURCE_UNSPECIFIED: CandidateSource
CANDIDATE_SOURCE_TWO_TOWER: CandidateSource
CANDIDATE_SOURCE_POPULAR: CandidateSource
CANDIDATE_SOURCE_ITEM_TO_ITEM: CandidateSource
CANDIDATE_SOURCE_SOCIAL: CandidateSource
CANDIDATE_SOURCE_FOLLOWED_FRESH: CandidateSource
CANDIDATE_SOURCE_TRENDING: CandidateSource
CANDIDATE_SOURCE_SEARCH_DENSE: CandidateSource
CANDIDATE_SOURCE_SEARCH_SPARSE: CandidateSource
CANDIDATE_SOURCE_SEARCH_HYBRID: CandidateSource
CANDIDATE_SOURCE_MF: CandidateSource
SURFACE_UNSPECIFIED: Surface
SURFACE_HOME: Surface
SURFACE_EXPLORE: Surface
SURFACE_CREATOR_PAGE: Surface
SURFACE_SEARCH: Surface
SURFACE_NOTIFICATION: Surface

class Fan(_message.Message):
    __slots__ = ("fan_id", "locale", "time_zone", "interests")
    FAN_ID_FIELD_NUMBER: _ClassVar[int]
    LOCALE_FIELD_NUMBER: _ClassVar[int]
    TIME_ZONE_FIELD_NUMBER: _ClassVar[int]
    INTERESTS_FIELD_NUMBER: _ClassVar[int]
    fan_id: str
    locale: str
    time_zone: str
    interests: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, fan_id: _Optional[str] = ..., locale: _Optional[str] = ..., time_zone: _Optional[str] = ..., interests: _Optional[_Iterable[str]] = ...) -> None: ...

class Tier(_message.Message):
    __slots__ = ("tier_id", "name", "price_cents", "currency")
    TIER_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    PRICE_CENTS_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    tier_id: str
    name: str
    price_cents: int
    currency: str
    def __init__(self, tier_id: _Optional[str] = ..., name: _Optional[str] = ..., price_cents: _Optional[int] = ..., currency: _Optional[str] = ...) -> None: ...

class Creator(_message.Message):
    __slots__ = ("creator_id", "name", "category", "tags", "language", "tiers", "description", "mature", "created_at")
    CREATOR_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    CATEGORY_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    LANGUAGE_FIELD_NUMBER: _ClassVar[int]
    TIERS_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    MATURE_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    creator_id: str
    name: str
    category: str
    tags: _containers.RepeatedScalarFieldContainer[str]
    language: str
    tiers: _containers.RepeatedCompositeFieldContainer[Tier]
    description: str
    mature: bool
    created_at: _timestamp_pb2.Timestamp
    def __init__(self, creator_id: _Optional[str] = ..., name: _Optional[str] = ..., category: _Optional[str] = ..., tags: _Optional[_Iterable[str]] = ..., language: _Optional[str] = ..., tiers: _Optional[_Iterable[_Union[Tier, _Mapping]]] = ..., description: _Optional[str] = ..., mature: _Optional[bool] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class Post(_message.Message):
    __slots__ = ("post_id", "creator_id", "title", "text", "access_level", "published_at", "category", "language")
    POST_ID_FIELD_NUMBER: _ClassVar[int]
    CREATOR_ID_FIELD_NUMBER: _ClassVar[int]
    TITLE_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    ACCESS_LEVEL_FIELD_NUMBER: _ClassVar[int]
    PUBLISHED_AT_FIELD_NUMBER: _ClassVar[int]
    CATEGORY_FIELD_NUMBER: _ClassVar[int]
    LANGUAGE_FIELD_NUMBER: _ClassVar[int]
    post_id: str
    creator_id: str
    title: str
    text: str
    access_level: AccessLevel
    published_at: _timestamp_pb2.Timestamp
    category: str
    language: str
    def __init__(self, post_id: _Optional[str] = ..., creator_id: _Optional[str] = ..., title: _Optional[str] = ..., text: _Optional[str] = ..., access_level: _Optional[_Union[AccessLevel, str]] = ..., published_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., category: _Optional[str] = ..., language: _Optional[str] = ...) -> None: ...

class Candidate(_message.Message):
    __slots__ = ("item_id", "kind", "source", "scores", "reasons", "sources")
    class ScoresEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    SCORES_FIELD_NUMBER: _ClassVar[int]
    REASONS_FIELD_NUMBER: _ClassVar[int]
    SOURCES_FIELD_NUMBER: _ClassVar[int]
    item_id: str
    kind: ItemKind
    source: CandidateSource
    scores: _containers.ScalarMap[str, float]
    reasons: _containers.RepeatedScalarFieldContainer[str]
    sources: _containers.RepeatedScalarFieldContainer[CandidateSource]
    def __init__(self, item_id: _Optional[str] = ..., kind: _Optional[_Union[ItemKind, str]] = ..., source: _Optional[_Union[CandidateSource, str]] = ..., scores: _Optional[_Mapping[str, float]] = ..., reasons: _Optional[_Iterable[str]] = ..., sources: _Optional[_Iterable[_Union[CandidateSource, str]]] = ...) -> None: ...

class RequestContext(_message.Message):
    __slots__ = ("surface", "request_time", "locale", "request_id")
    SURFACE_FIELD_NUMBER: _ClassVar[int]
    REQUEST_TIME_FIELD_NUMBER: _ClassVar[int]
    LOCALE_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    surface: Surface
    request_time: _timestamp_pb2.Timestamp
    locale: str
    request_id: str
    def __init__(self, surface: _Optional[_Union[Surface, str]] = ..., request_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., locale: _Optional[str] = ..., request_id: _Optional[str] = ...) -> None: ...

class Filters(_message.Message):
    __slots__ = ("languages", "categories", "exclude_item_ids", "exclude_mature", "kinds")
    LANGUAGES_FIELD_NUMBER: _ClassVar[int]
    CATEGORIES_FIELD_NUMBER: _ClassVar[int]
    EXCLUDE_ITEM_IDS_FIELD_NUMBER: _ClassVar[int]
    EXCLUDE_MATURE_FIELD_NUMBER: _ClassVar[int]
    KINDS_FIELD_NUMBER: _ClassVar[int]
    languages: _containers.RepeatedScalarFieldContainer[str]
    categories: _containers.RepeatedScalarFieldContainer[str]
    exclude_item_ids: _containers.RepeatedScalarFieldContainer[str]
    exclude_mature: bool
    kinds: _containers.RepeatedScalarFieldContainer[ItemKind]
    def __init__(self, languages: _Optional[_Iterable[str]] = ..., categories: _Optional[_Iterable[str]] = ..., exclude_item_ids: _Optional[_Iterable[str]] = ..., exclude_mature: _Optional[bool] = ..., kinds: _Optional[_Iterable[_Union[ItemKind, str]]] = ...) -> None: ...

class ModelInfo(_message.Message):
    __slots__ = ("name", "version")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: str
    def __init__(self, name: _Optional[str] = ..., version: _Optional[str] = ...) -> None: ...
