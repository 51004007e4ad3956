"""The search side of retrieval_svc: query, real-time upserts and deletes, over one index and encoder.

Writes encode and upsert synchronously, so when UpsertPosts / UpsertCreators answer, the items are in
the shard and the next Search finds them; DeleteItems removes points before answering. A search replica
(retrieval_svc.search.replication) validates a write, logs it, and answers once every live replica has
applied it from the log: the same guarantee, on every replica.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from kindred.data.schema import Creator, Post
from kindred.errors import InvalidArgument
from kindred.vectorstore.base import MATURE_KEY
from retrieval_svc.search.documents import check_item_id, creator_doc, post_doc
from retrieval_svc.search.index import SearchFilter, SearchIndex, encode_documents
from retrieval_svc.search.params import SearchParams
from retrieval_svc.search.query import HybridSearcher, QueryEncoder, QuerySide, SearchOutcome

if TYPE_CHECKING:
    from retrieval_svc.search.replication import Op, WriteLog

MAX_TEXT_CHARS = 100_000
log = logging.getLogger(__name__)


class SearchService:
    def __init__(
        self,
        index: SearchIndex,
        encoder: QueryEncoder,
        params: SearchParams | None = None,
        *,
        query_side: QuerySide | None = None,
        query_encoder: QueryEncoder | None = None,
    ) -> None:
        """`encoder` encodes documents (upserts) and, unless `query_encoder` is given, queries too:
        `query_encoder` must embed into the same space (e.g. kindred.text.encoder's
        load_quantized_query_encoder, the int8 export of the same weights)."""
        if index.encoder_version and index.encoder_version != encoder.version:
            # Same dimension (the searcher checks it) but another model: vectors of old items and new
            # queries live in slightly different spaces until the index is rebuilt. Serve, but say so.
            log.warning(
                "search index was built with text encoder %s, serving %s: rebuild (kindred index --rebuild)",
                index.encoder_version,
                encoder.version,
            )
        self.index = index
        self.encoder = encoder
        self.searcher = HybridSearcher(index, query_encoder or encoder, params, query_side=query_side)
        # Set by `replicate`: writes then go through the log, applied by every replica (`apply`).
        self.write_log: WriteLog | None = None

    def replicate(self, write_log: WriteLog) -> None:
        """Send every write through `write_log` (whose applier calls `apply` with it) from now on."""
        self.write_log = write_log

    def apply(self, op: Op) -> Any:
        """Applies one logged write to this replica's index (the write log's applier calls this)."""
        kind = op.get("op")
        if kind == "upsert_creators":
            return self._upsert_creators([Creator.from_dict(c) for c in op["items"]])
        if kind == "upsert_posts":
            return self._upsert_posts([Post.from_dict(p) for p in op["items"]])
        if kind == "delete":
            return self.index.delete(list(op["ids"]), kind=op.get("kind"))
        raise ValueError(f"unknown logged search write {kind!r}")

    def search(self, query: str, k: int, flt: SearchFilter) -> SearchOutcome:
        return self.searcher.search(query, k, flt)

    def upsert_creators(self, creators: Sequence[Creator]) -> int:
        for i, c in enumerate(creators):
            _check_id(c.creator_id, f"creators[{i}].creator_id")
            if not c.name.strip():
                raise InvalidArgument(f"creators[{i}].name", "is required")
        if self.write_log is not None:
            self.write_log.submit({"op": "upsert_creators", "items": [c.to_dict() for c in creators]})
            return len(creators)
        return self._upsert_creators(creators)

    def _upsert_creators(self, creators: Sequence[Creator]) -> int:
        docs = [creator_doc(c) for c in creators]
        if docs:
            self.index.upsert(
                docs, *encode_documents(docs, self.encoder.encode, evidence=self.index.encoded_evidence)
            )
        return len(docs)

    def upsert_posts(self, posts: Sequence[Post]) -> int:
        for i, p in enumerate(posts):
            _check_id(p.post_id, f"posts[{i}].post_id")
            _check_id(p.creator_id, f"posts[{i}].creator_id")
            if not (p.title.strip() or p.text.strip()):
                raise InvalidArgument(f"posts[{i}].text", "a post needs a title or a text")
            if len(p.title) + len(p.text) > MAX_TEXT_CHARS:
                raise InvalidArgument(f"posts[{i}].text", f"title + text exceed {MAX_TEXT_CHARS} characters")
        if self.write_log is not None:
            self.write_log.submit({"op": "upsert_posts", "items": [p.to_dict() for p in posts]})
            return len(posts)
        return self._upsert_posts(posts)

    def _upsert_posts(self, posts: Sequence[Post]) -> int:
        # A post inherits its creator's maturity, read from the creator's entry in the same index.
        creators = {h.item_id: h.payload for h in self.index.fetch(sorted({p.creator_id for p in posts}))}
        docs = [
            post_doc(p, mature=bool(creators.get(p.creator_id, {}).get(MATURE_KEY, False))) for p in posts
        ]
        if docs:
            self.index.upsert(
                docs, *encode_documents(docs, self.encoder.encode, evidence=self.index.encoded_evidence)
            )
        return len(docs)

    def delete(self, ids: Sequence[str], *, kind: str | None = None) -> int:
        for i, item_id in enumerate(ids):
            _check_id(item_id, f"item_ids[{i}]")
        if self.write_log is not None:
            return int(self.write_log.submit({"op": "delete", "ids": list(ids), "kind": kind}) or 0)
        return self.index.delete(list(ids), kind=kind)

    def close(self) -> None:
        if self.write_log is not None:
            self.write_log.close()  # first: its applier writes to the index
        self.index.close()


def _check_id(item_id: str, field: str) -> None:
    problem = check_item_id(item_id, field)
    if problem is not None:
        raise InvalidArgument(field, problem.removeprefix(f"{field} "))
