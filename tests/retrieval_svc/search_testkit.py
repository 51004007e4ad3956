"""A small real text encoder and catalogue for the search tests.

The encoder is the production TextEncoder (onnxruntime + `tokenizers`) over a tiny graph: token
embeddings are rows of a fixed random table over a word vocabulary, mean-pooled and normalised, so two
texts sharing words get close vectors — enough for dense retrieval to behave like dense retrieval,
in milliseconds, without exporting MiniLM.
"""

from __future__ import annotations

import hashlib
import itertools
from pathlib import Path
from types import SimpleNamespace

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from kindred.data.schema import Creator, Post
from kindred.models import promote, write_model
from kindred.text.encoder import TextEncoder
from retrieval_svc.search.index import SearchIndex

DIM = 16
TOPICS = {
    "Music": ["jazz", "piano", "guitar", "chords", "album", "melody", "drums", "vinyl"],
    "Cooking": ["pasta", "sauce", "garlic", "oven", "bread", "recipe", "spices", "noodles"],
    "Gaming": ["speedrun", "boss", "controller", "arcade", "pixel", "quest", "level", "loot"],
    "Art": ["watercolor", "palette", "brush", "canvas", "sketch", "ink", "portrait", "charcoal"],
}
NAME_WORDS = ["Midnight", "Velvet", "Quill", "Studio", "Lantern", "Harbor", "Copper", "Fox"]
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]
LANGUAGES = ["en", "es"]


def vocabulary() -> list[str]:
    words = {w for ws in TOPICS.values() for w in ws} | {w.lower() for w in NAME_WORDS}
    words |= {"fresh", "new", "notes", "guide", "sunday", "zebra"}
    return SPECIAL + sorted(words)


def write_tiny_encoder(
    models_dir: Path,
    version: str = "tiny-v1",
    *,
    name: str = "text_encoder",
    extra_manifest: dict[str, object] | None = None,
    extra_files: dict[str, bytes] | None = None,
) -> TextEncoder:
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors

    vocab = vocabulary()
    # Topic words point along their topic's axis (dims 0-3) plus a little noise; other words live in
    # the remaining dims: same-topic texts are close, different topics nearly orthogonal, as with MiniLM.
    rng = np.random.default_rng(11)
    table = np.zeros((len(vocab), DIM), dtype=np.float32)
    for i, word in enumerate(vocab):
        topic = next((t for t, (_, ws) in enumerate(TOPICS.items()) if word in ws), None)
        if topic is not None:
            table[i, topic] = 3.0
            table[i, 4:] = rng.normal(scale=0.3, size=DIM - 4)
        elif i >= len(SPECIAL):
            table[i, 4:] = rng.normal(size=DIM - 4)
    graph = helper.make_graph(
        [helper.make_node("Gather", ["table", "input_ids"], ["token_embeddings"], axis=0)],
        "tiny",
        [
            helper.make_tensor_value_info(n, TensorProto.INT64, ["batch", "seq"])
            for n in ("input_ids", "attention_mask", "token_type_ids")
        ],
        [helper.make_tensor_value_info("token_embeddings", TensorProto.FLOAT, ["batch", "seq", DIM])],
        initializer=[numpy_helper.from_array(table, "table")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(vocab)}, unk_token="[UNK]"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    tok_bytes = tok.to_str().encode()
    manifest = {
        "inputs": ["input_ids", "attention_mask", "token_type_ids"],
        "outputs": ["token_embeddings"],
        "features": ["text"],
        "max_length": 64,
        "pooling": "mean",
        "normalize": True,
        "dim": DIM,
        "tokenizer_sha256": hashlib.sha256(tok_bytes).hexdigest(),
        **(extra_manifest or {}),
    }
    directory = write_model(
        models_dir,
        name,
        version,
        model.SerializeToString(),
        manifest,
        extra_files={"tokenizer.json": tok_bytes, **(extra_files or {})},
    )
    promote(models_dir, name, version)
    return TextEncoder.load(directory)


def creators() -> list[Creator]:
    """Two creators per topic, names from NAME_WORDS; the last of each topic is mature and in Spanish."""
    out = []
    pairs = itertools.combinations(NAME_WORDS, 2)
    for t, category in enumerate(TOPICS):
        for j in range(2):
            a, b = next(pairs)
            out.append(
                Creator(
                    creator_id=f"c{t}{j}",
                    name=f"{a} {b}",
                    category=category,
                    tags=tuple(TOPICS[category][:3]),
                    language=LANGUAGES[j],
                    description=f"{a} {b} makes {category.lower()}: " + " ".join(TOPICS[category][j : j + 4]),
                    mature=j == 1,
                    created_at=1_700_000_000.0 + t,
                )
            )
    return out


def posts(per_creator: int = 3) -> list[Post]:
    out = []
    for c in creators():
        words = TOPICS[c.category]
        for i in range(per_creator):
            w = words[(i * 3) % len(words) : (i * 3) % len(words) + 3]
            out.append(
                Post(
                    post_id=f"p{c.creator_id}{i}",
                    creator_id=c.creator_id,
                    title=f"{w[0]} notes",
                    text=" ".join(w * 2),
                    access_level=("public", "members", "tier")[i % 3],
                    published_at=1_760_000_000.0 + 3600.0 * i,
                    category=c.category,
                    language=c.language,
                )
            )
    return out


def text_post(post_id: str, text: str, category: str = "Music") -> Post:
    """A public English post with no title, of creator c0: for tests that only care about its text."""
    return Post(
        post_id=post_id,
        creator_id="c0",
        title="",
        text=text,
        access_level="public",
        published_at=1_760_000_000.0,
        category=category,
        language="en",
    )


def build_index(root: Path, encoder: TextEncoder) -> SearchIndex:
    """A search index at `root` holding creators() and posts(), encoded by `encoder` (left open)."""
    from kindred.text.tokenize import Bm25
    from retrieval_svc.search.bulk import catalogue_docs

    docs = catalogue_docs(SimpleNamespace(creators=creators(), posts=posts()))  # type: ignore[arg-type]
    index = SearchIndex.create(
        root, dim=encoder.dim, bm25=Bm25.fit(d.text for d in docs), encoder_version=encoder.version
    )
    index.upsert(docs, encoder.encode([d.text for d in docs]))
    return index
