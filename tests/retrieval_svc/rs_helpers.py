"""Test doubles and tiny real artefacts for the retrieval service tests.

`FakeStore` stands in for the online store (a dict, recording reads). `write_user_tower` writes a real
ONNX user tower (MatMul + L2 normalisation) through the model registry, so the service loads it exactly
as it loads a trained one. `tiny_catalogue` makes creators with unit vectors and filterable payloads.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from kindred.features import USER_TOWER_FEATURES, user_tower_features
from kindred.mf import MANIFEST_KEY as MF_MANIFEST_KEY
from kindred.mf import MfModel, MfParams
from kindred.models import promote, write_model
from kindred.vectorstore import PayloadFilter, StoredPoint, VectorIndex

CATEGORIES = ["Music", "Art", "Gaming", "Podcasts"]
LANGUAGES = ["en", "fr", "de"]
EMBED_DIM = 8


class FakeStore:
    """The online store's read side over nested dicts; `fail` makes every read raise."""

    def __init__(self, data: Mapping[str, Mapping[str, dict[str, Any]]] | None = None) -> None:
        self.data = {ns: dict(rows) for ns, rows in (data or {}).items()}
        self.reads: list[tuple[str, tuple[str, ...]]] = []
        self.fail: Exception | None = None

    def get(self, namespace: str, keys: Sequence[str]) -> list[dict[str, Any] | None]:
        self.reads.append((namespace, tuple(keys)))
        if self.fail is not None:
            raise self.fail
        rows = self.data.get(namespace, {})
        return [rows.get(k) for k in keys]

    def close(self) -> None:
        pass


def user_tower_weights(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(len(USER_TOWER_FEATURES), EMBED_DIM)).astype(np.float32)


def user_tower_onnx(weights: np.ndarray) -> bytes:
    """(B, F) → normalize((B, F) @ W) as an ONNX graph (opset 17)."""
    f, e = weights.shape
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["features", "W"], ["y"]),
            helper.make_node("ReduceL2", ["y"], ["norm"], axes=[1], keepdims=1),
            helper.make_node("Add", ["norm", "eps"], ["safe_norm"]),
            helper.make_node("Div", ["y", "safe_norm"], ["user_vec"]),
        ],
        "user_tower",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["B", f])],
        [helper.make_tensor_value_info("user_vec", TensorProto.FLOAT, ["B", e])],
        initializer=[
            numpy_helper.from_array(weights, "W"),
            numpy_helper.from_array(np.array([1e-12], dtype=np.float32), "eps"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def write_user_tower(
    models_dir: Path,
    version: str,
    weights: np.ndarray,
    *,
    index_version: str | None = None,
    promoted: bool = True,
    mf: MfModel | None = None,
) -> None:
    """Writes (and by default promotes) a user tower; `index_version` goes into its manifest as the
    trainer writes it (absent, the service pairs the tower with the index of the same version); `mf`
    rides along in its files, as the trainer ships it (absent: the mf source is off)."""
    manifest: dict[str, Any] = {
        "inputs": ["features"],
        "outputs": ["user_vec"],
        "features": list(USER_TOWER_FEATURES),
        "opset": 17,
    }
    if index_version is not None:
        manifest["index_version"] = index_version
    files: dict[str, bytes | Path] = {}
    if mf is not None:
        manifest[MF_MANIFEST_KEY] = mf.manifest()
        files.update(mf.files())
    write_model(models_dir, "two_tower_user", version, user_tower_onnx(weights), manifest, extra_files=files)
    if promoted:
        promote(models_dir, "two_tower_user", version)


def tiny_mf(ids: Sequence[str], seed: int = 0, dim: int = 6) -> MfModel:
    """An mf model with random factors over `ids` (the fold-in's algebra is tested on a fitted one)."""
    rng = np.random.default_rng(seed)
    factors = rng.normal(size=(len(ids), dim)).astype(np.float32)
    idf = rng.uniform(0.5, 3.0, size=len(ids)).astype(np.float32)
    return MfModel(tuple(ids), factors, idf, avg_length=5.0, params=MfParams(factors=dim, regularization=1.0))


def embed(fan_row: Mapping[str, Any] | None, weights: np.ndarray) -> np.ndarray:
    """What the ONNX user tower computes, in numpy (the test's independent reference)."""
    y = user_tower_features(fan_row) @ weights
    return (y / np.linalg.norm(y)).astype(np.float32)


def tiny_catalogue(
    n: int, seed: int = 0, prefix: str = "c"
) -> tuple[list[str], np.ndarray, list[dict[str, Any]]]:
    rng = np.random.default_rng(seed)
    ids = [f"{prefix}{i:03d}" for i in range(n)]
    vectors = rng.normal(size=(n, EMBED_DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    payloads = [
        {
            "creator_id": cid,
            "name": f"Creator {cid}",
            "category": CATEGORIES[i % len(CATEGORIES)],
            "language": LANGUAGES[(i // len(CATEGORIES)) % len(LANGUAGES)],
            "mature": i % 5 == 0,
        }
        for i, cid in enumerate(ids)
    ]
    return ids, vectors, payloads


def fan_row(
    fan_id: str, history: Sequence[str], interests: Sequence[str] = (), language: str = "en"
) -> dict[str, Any]:
    return {
        "fan_id": fan_id,
        "language": language,
        "interests": list(interests),
        "n_events": 3 * len(history),
        "n_follows": len(history),
        "n_creators": len(history),
        "history": list(history),
        "history_weights": [1.0] * len(history),
        "following": list(history),
    }


def popular_lists(ids: Sequence[str], payloads: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """A "popular" namespace like the trainer's: global order = id order, plus per-category lists."""
    out: dict[str, dict[str, Any]] = {
        "global": {"creator_ids": list(ids), "scores": [1.0 - i / len(ids) for i in range(len(ids))]}
    }
    for cat in CATEGORIES:
        members = [cid for cid, p in zip(ids, payloads, strict=True) if p["category"] == cat]
        out[f"category:{cat}"] = {"creator_ids": members, "scores": [0.5] * len(members)}
    return out


def candidate_tables(
    ids: Sequence[str], payloads: Sequence[Mapping[str, Any]], social_fans: Sequence[str] = ("f1",)
) -> dict[str, dict[str, dict[str, Any]]]:
    """The trainer's list namespaces, shaped like trainer.candidates writes them.

    creator_neighbors: creator i → the next 12 creators (i+1 closest). social: each fan in
    `social_fans` → 30 creators from the first third on, friend counts 3, 3, 2, 2, 1, ...
    trending: "global" in reverse id order, per-category lists, and "new:" lists holding every 7th
    creator from c002.
    """
    n = len(ids)
    neighbors = {
        cid: {"ids": [ids[(i + d) % n] for d in range(1, 13)], "scores": [1.0 / d for d in range(1, 13)]}
        for i, cid in enumerate(ids)
    }
    social_ids = list(ids[n // 3 : n // 3 + 30])
    friends = [max(1, 3 - r // 2) for r in range(len(social_ids))]
    social = {
        fan: {"ids": social_ids, "scores": [f / (f + 1.0) for f in friends], "friends": friends}
        for fan in social_fans
    }
    trending: dict[str, dict[str, Any]] = {}
    for prefix, members in (
        ("", list(reversed(ids))),
        ("new:", [c for i, c in enumerate(ids) if i % 7 == 2]),
    ):
        trending[prefix + "global"] = {
            "ids": members,
            "scores": [1.0 - r / len(members) for r in range(len(members))],
        }
        for cat in CATEGORIES:
            mine = [c for c in members if payloads[ids.index(c)]["category"] == cat]
            trending[f"{prefix}category:{cat}"] = {"ids": mine, "scores": [0.5] * len(mine)}
    return {"creator_neighbors": neighbors, "social": social, "trending": trending}


class SpyIndex:
    """A real index that records the filters list-based sources hand to `fetch`."""

    def __init__(self, inner: VectorIndex) -> None:
        self.inner = inner
        self.fetches: list[tuple[tuple[str, ...], PayloadFilter | None]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def fetch(
        self,
        ids: Any,
        filter: PayloadFilter | None = None,
        *,
        with_vectors: bool = False,
        with_payload: bool = True,
    ) -> list[StoredPoint]:
        self.fetches.append((tuple(ids), filter))
        return self.inner.fetch(ids, filter, with_vectors=with_vectors, with_payload=with_payload)


@dataclasses.dataclass
class IndexedCreators:
    index: SpyIndex
    ids: list[str]
    payloads: dict[str, dict[str, Any]]

    def passes(self, ids: list[str], flt: PayloadFilter) -> list[str]:
        """The reference filter semantics, in Python: what the engine must agree with."""
        return [i for i in ids if i in self.payloads and flt.matches(i, self.payloads[i])]
