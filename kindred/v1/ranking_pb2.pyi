from kindred.v1 import common_pb2 as _common_pb2
from kindred.v1 import retrieval_pb2 as _retrieval_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RecommendRequest(_message.Message):
    __slots__ = ("fan_id", "k", "context", "filters")
    FAN_ID_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    FILTERS_FIELD_NUMBER: _ClassVar[int]
    fan_id: str
    k: int
    context: _common_pb2.RequestContext
    filters: _common_pb2.Filters
    def __init__(self, fan_id: _Optional[str] = ..., k: _Optional[int] = ..., context: _Optional[_Union[_common_pb2.RequestContext, _Mapping]] = ..., filters: _Optional[_Union[_common_pb2.Filters, _Mapping]] = ...) -> None: ...

class RecommendResponse(_message.Message):
    __slots__ = ("items", "ranker", "retriever", "fallback")
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    RANKER_FIELD_NUMBER: _ClassVar[int]
    RETRIEVER_FIELD_NUMBER: _ClassVar[int]
    FALLBACK_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[_common_pb2.Candidate]
    ranker: _common_pb2.ModelInfo
    retriever: _common_pb2.ModelInfo
    fallback: str
    def __init__(self, items: _Optional[_Iterable[_Union[_common_pb2.Candidate, _Mapping]]] = ..., ranker: _Optional[_Union[_common_pb2.ModelInfo, _Mapping]] = ..., retriever: _Optional[_Union[_common_pb2.ModelInfo, _Mapping]] = ..., fallback: _Optional[str] = ...) -> None: ...

class RankRequest(_message.Message):
    __slots__ = ("fan_id", "candidates", "context", "k")
    FAN_ID_FIELD_NUMBER: _ClassVar[int]
    CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    fan_id: str
    candidates: _containers.RepeatedCompositeFieldContainer[_common_pb2.Candidate]
    context: _common_pb2.RequestContext
    k: int
    def __init__(self, fan_id: _Optional[str] = ..., candidates: _Optional[_Iterable[_Union[_common_pb2.Candidate, _Mapping]]] = ..., context: _Optional[_Union[_common_pb2.RequestContext, _Mapping]] = ..., k: _Optional[int] = ...) -> None: ...

class RankResponse(_message.Message):
    __slots__ = ("items", "ranker")
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    RANKER_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[_common_pb2.Candidate]
    ranker: _common_pb2.ModelInfo
    def __init__(self, items: _Optional[_Iterable[_Union[_common_pb2.Candidate, _Mapping]]] = ..., ranker: _Optional[_Union[_common_pb2.ModelInfo, _Mapping]] = ...) -> None: ...

class SearchRankedRequest(_message.Message):
    __slots__ = ("query", "fan_id", "k", "filters", "context")
    QUERY_FIELD_NUMBER: _ClassVar[int]
    FAN_ID_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    FILTERS_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    query: str
    fan_id: str
    k: int
    filters: _common_pb2.Filters
    context: _common_pb2.RequestContext
    def __init__(self, query: _Optional[str] = ..., fan_id: _Optional[str] = ..., k: _Optional[int] = ..., filters: _Optional[_Union[_common_pb2.Filters, _Mapping]] = ..., context: _Optional[_Union[_common_pb2.RequestContext, _Mapping]] = ...) -> None: ...

class SearchRankedResponse(_message.Message):
    __slots__ = ("items", "details", "encoder", "personalised")
    class DetailsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: _retrieval_pb2.SearchItem
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[_retrieval_pb2.SearchItem, _Mapping]] = ...) -> None: ...
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    DETAILS_FIELD_NUMBER: _ClassVar[int]
    ENCODER_FIELD_NUMBER: _ClassVar[int]
    PERSONALISED_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[_common_pb2.Candidate]
    details: _containers.MessageMap[str, _retrieval_pb2.SearchItem]
    encoder: _common_pb2.ModelInfo
    personalised: bool
    def __init__(self, items: _Optional[_Iterable[_Union[_common_pb2.Candidate, _Mapping]]] = ..., details: _Optional[_Mapping[str, _retrieval_pb2.SearchItem]] = ..., encoder: _Optional[_Union[_common_pb2.ModelInfo, _Mapping]] = ..., personalised: _Optional[bool] = ...) -> None: ...
