import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from kindred.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RetrieveRequest(_message.Message):
    __slots__ = ("fan_id", "k", "filters", "context", "source_quotas")
    class SourceQuotasEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    FAN_ID_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    FILTERS_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    SOURCE_QUOTAS_FIELD_NUMBER: _ClassVar[int]
    fan_id: str
    k: int
    filters: _common_pb2.Filters
    context: _common_pb2.RequestContext
    source_quotas: _containers.ScalarMap[str, int]
    def __init__(self, fan_id: _Optional[str] = ..., k: _Optional[int] = ..., filters: _Optional[_Union[_common_pb2.Filters, _Mapping]] = ..., context: _Optional[_Union[_common_pb2.RequestContext, _Mapping]] = ..., source_quotas: _Optional[_Mapping[str, int]] = ...) -> None: ...

class RetrieveResponse(_message.Message):
    __slots__ = ("candidates", "model", "degraded_sources")
    class DegradedSourcesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    DEGRADED_SOURCES_FIELD_NUMBER: _ClassVar[int]
    candidates: _containers.RepeatedCompositeFieldContainer[_common_pb2.Candidate]
    model: _common_pb2.ModelInfo
    degraded_sources: _containers.ScalarMap[str, str]
    def __init__(self, candidates: _Optional[_Iterable[_Union[_common_pb2.Candidate, _Mapping]]] = ..., model: _Optional[_Union[_common_pb2.ModelInfo, _Mapping]] = ..., degraded_sources: _Optional[_Mapping[str, str]] = ...) -> None: ...

class SearchRequest(_message.Message):
    __slots__ = ("query", "k", "filters", "context", "fan_id")
    QUERY_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    FILTERS_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    FAN_ID_FIELD_NUMBER: _ClassVar[int]
    query: str
    k: int
    filters: _common_pb2.Filters
    context: _common_pb2.RequestContext
    fan_id: str
    def __init__(self, query: _Optional[str] = ..., k: _Optional[int] = ..., filters: _Optional[_Union[_common_pb2.Filters, _Mapping]] = ..., context: _Optional[_Union[_common_pb2.RequestContext, _Mapping]] = ..., fan_id: _Optional[str] = ...) -> None: ...

class SearchItem(_message.Message):
    __slots__ = ("kind", "creator_id", "title", "category", "language", "access_level", "published_at")
    KIND_FIELD_NUMBER: _ClassVar[int]
    CREATOR_ID_FIELD_NUMBER: _ClassVar[int]
    TITLE_FIELD_NUMBER: _ClassVar[int]
    CATEGORY_FIELD_NUMBER: _ClassVar[int]
    LANGUAGE_FIELD_NUMBER: _ClassVar[int]
    ACCESS_LEVEL_FIELD_NUMBER: _ClassVar[int]
    PUBLISHED_AT_FIELD_NUMBER: _ClassVar[int]
    kind: _common_pb2.ItemKind
    creator_id: str
    title: str
    category: str
    language: str
    access_level: _common_pb2.AccessLevel
    published_at: _timestamp_pb2.Timestamp
    def __init__(self, kind: _Optional[_Union[_common_pb2.ItemKind, str]] = ..., creator_id: _Optional[str] = ..., title: _Optional[str] = ..., category: _Optional[str] = ..., language: _Optional[str] = ..., access_level: _Optional[_Union[_common_pb2.AccessLevel, str]] = ..., published_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class SearchResponse(_message.Message):
    __slots__ = ("candidates", "model", "items")
    class ItemsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: SearchItem
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[SearchItem, _Mapping]] = ...) -> None: ...
    CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    candidates: _containers.RepeatedCompositeFieldContainer[_common_pb2.Candidate]
    model: _common_pb2.ModelInfo
    items: _containers.MessageMap[str, SearchItem]
    def __init__(self, candidates: _Optional[_Iterable[_Union[_common_pb2.Candidate, _Mapping]]] = ..., model: _Optional[_Union[_common_pb2.ModelInfo, _Mapping]] = ..., items: _Optional[_Mapping[str, SearchItem]] = ...) -> None: ...

class SimilarCreatorsRequest(_message.Message):
    __slots__ = ("creator_id", "k", "filters")
    CREATOR_ID_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    FILTERS_FIELD_NUMBER: _ClassVar[int]
    creator_id: str
    k: int
    filters: _common_pb2.Filters
    def __init__(self, creator_id: _Optional[str] = ..., k: _Optional[int] = ..., filters: _Optional[_Union[_common_pb2.Filters, _Mapping]] = ...) -> None: ...

class SimilarCreatorsResponse(_message.Message):
    __slots__ = ("candidates",)
    CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    candidates: _containers.RepeatedCompositeFieldContainer[_common_pb2.Candidate]
    def __init__(self, candidates: _Optional[_Iterable[_Union[_common_pb2.Candidate, _Mapping]]] = ...) -> None: ...

class UpsertCreatorsRequest(_message.Message):
    __slots__ = ("creators",)
    CREATORS_FIELD_NUMBER: _ClassVar[int]
    creators: _containers.RepeatedCompositeFieldContainer[_common_pb2.Creator]
    def __init__(self, creators: _Optional[_Iterable[_Union[_common_pb2.Creator, _Mapping]]] = ...) -> None: ...

class UpsertCreatorsResponse(_message.Message):
    __slots__ = ("upserted",)
    UPSERTED_FIELD_NUMBER: _ClassVar[int]
    upserted: int
    def __init__(self, upserted: _Optional[int] = ...) -> None: ...

class UpsertPostsRequest(_message.Message):
    __slots__ = ("posts",)
    POSTS_FIELD_NUMBER: _ClassVar[int]
    posts: _containers.RepeatedCompositeFieldContainer[_common_pb2.Post]
    def __init__(self, posts: _Optional[_Iterable[_Union[_common_pb2.Post, _Mapping]]] = ...) -> None: ...

class UpsertPostsResponse(_message.Message):
    __slots__ = ("upserted",)
    UPSERTED_FIELD_NUMBER: _ClassVar[int]
    upserted: int
    def __init__(self, upserted: _Optional[int] = ...) -> None: ...

class DeleteItemsRequest(_message.Message):
    __slots__ = ("item_ids", "kind")
    ITEM_IDS_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    item_ids: _containers.RepeatedScalarFieldContainer[str]
    kind: _common_pb2.ItemKind
    def __init__(self, item_ids: _Optional[_Iterable[str]] = ..., kind: _Optional[_Union[_common_pb2.ItemKind, str]] = ...) -> None: ...

class DeleteItemsResponse(_message.Message):
    __slots__ = ("deleted",)
    DELETED_FIELD_NUMBER: _ClassVar[int]
    deleted: int
    def __init__(self, deleted: _Optional[int] = ...) -> None: ...
