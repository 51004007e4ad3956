"""Test doubles and tiny real artefacts for the retrieval service tests.

`FakeStore` stands in for the online store (a dict, recording reads). `write_user_tower` writes a real
ONNX user tower (MatMul + L2 normalisation) through the model registry, so the service loads it exactly
as it loads a trained one. `tiny_catalogue` makes creators with unit vectors and filterable payloads.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from kindred.features import USER_TOWER_FEATURES, user_tower_features
from kindred.models import promote, write_model

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


def write_user_tower(models_dir: Path, version: str, weights: np.ndarray) -> None:
    write_model(
        models_dir,
        "two_tower_user",
        version,
        user_tower_onnx(weights),
        {"inputs": ["features"], "outputs": ["user_vec"], "features": list(USER_TOWER_FEATURES), "opset": 17},
    )
    promote(models_dir, "two_tower_user", version)


def embed(fan_row: Mapping[str, Any] | None, weights: np.ndarray) -> np.ndarray:
    """What the ONNX user tower computes, in numpy (the test's independent reference)."""
    y = user_tower_features(fan_row) @ weights
    return (y / np.linalg.norm(y)).astype(np.float32)


def tiny_catalogue(n: int, seed: int = 0) -> tuple[list[str], np.ndarray, list[dict[str, Any]]]:
    rng = np.random.default_rng(seed)
    ids = [f"c{i:03d}" for i in range(n)]
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
