"""Vector search behind one small interface: qdrant-edge in-process (default) or a Qdrant server.

    index = open_creator_index(settings)            # the current version, for serving
    hits = index.search(vector, k=100, filter=PayloadFilter.build(languages=["en"]))

The trainer builds a version with `index_creators(settings, version, ids, vectors, payloads)`, which
also makes it current. Importing this package loads neither engine's data; nothing is opened until
called.
"""

from kindred.vectorstore.base import (
    ITEM_ID_KEY,
    HnswParams,
    IndexPoint,
    PayloadFilter,
    ScoredPoint,
    StoredPoint,
    VectorIndex,
    VectorIndexError,
    point_uuid,
    search_ef,
)
from kindred.vectorstore.factory import (
    CREATOR_PAYLOAD_INDEXES,
    CREATOR_VECTOR,
    creator_index_root,
    current_creator_version,
    index_creators,
    open_creator_index,
    promote_creator_index,
    prune_creator_indexes,
)

__all__ = [
    "CREATOR_PAYLOAD_INDEXES",
    "CREATOR_VECTOR",
    "ITEM_ID_KEY",
    "HnswParams",
    "IndexPoint",
    "PayloadFilter",
    "ScoredPoint",
    "StoredPoint",
    "VectorIndex",
    "VectorIndexError",
    "creator_index_root",
    "current_creator_version",
    "index_creators",
    "open_creator_index",
    "point_uuid",
    "promote_creator_index",
    "prune_creator_indexes",
    "search_ef",
]
