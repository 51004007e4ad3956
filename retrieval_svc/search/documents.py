"""What gets indexed for a creator or a post: texts, the name, and the payload the filters read.

Creators are found by their name (typo-tolerant trigrams), category, tags and description; posts by
their title and text. Both share one payload schema, so one filter (kind, language, category, access,
maturity, creator) applies to a mixed result list inside the engine.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, Final, Literal

from kindred.data.schema import ACCESS_LEVELS, Creator, Post
from kindred.text.fusion import item_sentences
from kindred.vectorstore.base import CATEGORY_KEY, LANGUAGE_KEY, MATURE_KEY

Kind = Literal["creator", "post"]
KINDS: Final[tuple[Kind, ...]] = ("creator", "post")

KIND_KEY: Final = "kind"
CREATOR_KEY: Final = "creator_id"
ACCESS_KEY: Final = "access"
PUBLISHED_KEY: Final = "published_at"
TITLE_KEY: Final = "title"

# Payload fields with an engine index (filters on them never scan).
PAYLOAD_INDEXES: Final[Mapping[str, str]] = {
    KIND_KEY: "keyword",
    CATEGORY_KEY: "keyword",
    LANGUAGE_KEY: "keyword",
    ACCESS_KEY: "keyword",
    CREATOR_KEY: "keyword",
    MATURE_KEY: "integer",
    PUBLISHED_KEY: "float",
}
MAX_ID_CHARS: Final = 128


@dataclasses.dataclass(frozen=True)
class SearchDoc:
    """One searchable item. `text` feeds both the dense encoder and BM25; `name` the trigram vector.
    `body`: the text after the title, which the sentence evidence splits (`encoded_evidence_texts`;
    None: `text`)."""

    item_id: str
    kind: Kind
    text: str
    name: str
    payload: Mapping[str, Any]
    body: str | None = None


def creator_doc(c: Creator) -> SearchDoc:
    # The name leads the text: MiniLM truncates at 256 tokens and the name is what fans type most.
    parts = [c.name, c.category, " ".join(c.tags), c.description]
    return SearchDoc(
        item_id=c.creator_id,
        kind="creator",
        text=". ".join(p for p in parts if p),
        name=c.name,
        body=". ".join(p for p in parts[1:] if p),
        payload={
            KIND_KEY: "creator",
            CREATOR_KEY: c.creator_id,
            TITLE_KEY: c.name,
            CATEGORY_KEY: c.category,
            LANGUAGE_KEY: c.language,
            ACCESS_KEY: "public",
            MATURE_KEY: c.mature,
            PUBLISHED_KEY: float(c.created_at),
        },
    )


def post_doc(p: Post, *, mature: bool = False) -> SearchDoc:
    """`mature`: the post's creator is mature (posts inherit it, so `exclude_mature` hides them too)."""
    return SearchDoc(
        item_id=p.post_id,
        kind="post",
        text=". ".join(x for x in (p.title, p.text) if x),
        name="",
        body=p.text,
        payload={
            KIND_KEY: "post",
            CREATOR_KEY: p.creator_id,
            TITLE_KEY: p.title,
            CATEGORY_KEY: p.category,
            LANGUAGE_KEY: p.language,
            ACCESS_KEY: p.access_level,
            MATURE_KEY: mature,
            PUBLISHED_KEY: float(p.published_at),
        },
    )


def encoded_evidence_texts(doc: SearchDoc) -> tuple[str, list[str]]:
    """(title, sentences) of `doc` whose vectors an index with encoded evidence stores: the title
    payload ("": no title vector) and kindred.text.fusion.item_sentences of it and the body (the title
    once, not again as the text's first sentence)."""
    title = str(doc.payload.get(TITLE_KEY) or "").strip()
    return title, item_sentences(title, doc.text if doc.body is None else doc.body)


def check_item_id(item_id: str, field: str) -> str | None:
    """Why `item_id` cannot be indexed, or None if it can (the caller names the field)."""
    if not item_id:
        return f"{field} is required"
    if len(item_id) > MAX_ID_CHARS or not item_id.isprintable():
        return f"{field} must be 1..{MAX_ID_CHARS} printable characters"
    return None


__all__ = [
    "ACCESS_KEY",
    "ACCESS_LEVELS",
    "CREATOR_KEY",
    "KINDS",
    "KIND_KEY",
    "PAYLOAD_INDEXES",
    "PUBLISHED_KEY",
    "TITLE_KEY",
    "Kind",
    "SearchDoc",
    "check_item_id",
    "creator_doc",
    "encoded_evidence_texts",
    "post_doc",
]
