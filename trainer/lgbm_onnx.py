"""A LightGBM booster as an ONNX graph (ai.onnx.ml TreeEnsembleRegressor), so onnxruntime serves it.

No converter package is installed for LightGBM (onnxmltools is not in the stack), and a booster is
only a sum of binary trees, so this writes the graph directly from `Booster.dump_model()`:

    features float32 (N, F) -> TreeEnsembleRegressor (SUM of leaf values) -> Reshape -> score (N,)

Exactness: LightGBM compares a feature (as float64) with a float64 threshold, `x <= t` goes left.
Features reach the graph as float32, so each threshold is replaced by the largest float32 not above
it; for every float32 x, `x <= t` and `x <= that float32` then agree, and the graph picks the same
leaf as LightGBM. Only `<=` numeric splits are supported; features must be finite (a NaN would take
LightGBM's missing-value branch, which this graph does not model) - the caller guarantees both.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import onnx
from numpy.typing import NDArray
from onnx import TensorProto, helper

INPUT_NAME = "features"
OUTPUT_NAME = "score"
OPSET = 17
ML_OPSET = 3


def _f32_at_most(threshold: float) -> float:
    t32 = np.float32(threshold)
    if float(t32) > threshold:
        t32 = np.nextafter(t32, np.float32(-np.inf))
    return float(t32)


def booster_to_onnx(booster: Any, n_features: int, base_weights: NDArray[np.float32] | None = None) -> bytes:
    """Serialized ONNX model computing `booster.predict(x, raw_score=True)` for (N, n_features) x,
    plus `x @ base_weights` when given (the linear base score the trees were boosted from)."""
    return boosters_to_onnx([booster], n_features, base_weights)


def boosters_to_onnx(
    boosters: Sequence[Any], n_features: int, base_weights: NDArray[np.float32] | None = None
) -> bytes:
    """The mean of several boosters' raw scores (a bag, e.g. one per seed) as one tree ensemble: every
    tree of every booster, each leaf value divided by the number of boosters; plus `x @ base_weights`."""
    if not boosters:
        raise ValueError("no booster to export")
    scale = 1.0 / len(boosters)
    trees = []
    for booster in boosters:
        trees.extend(booster.dump_model()["tree_info"])
    attrs: dict[str, Any] = {
        key: []
        for key in (
            "nodes_treeids",
            "nodes_nodeids",
            "nodes_featureids",
            "nodes_values",
            "nodes_modes",
            "nodes_truenodeids",
            "nodes_falsenodeids",
            "nodes_missing_value_tracks_true",
            "target_treeids",
            "target_nodeids",
            "target_ids",
            "target_weights",
        )
    }
    for tree_id, tree in enumerate(trees):
        next_id = [0]

        def visit(node: dict[str, Any], tree_id: int = tree_id, next_id: list[int] = next_id) -> int:
            node_id = next_id[0]
            next_id[0] += 1
            attrs["nodes_treeids"].append(tree_id)
            attrs["nodes_nodeids"].append(node_id)
            attrs["nodes_missing_value_tracks_true"].append(0)
            if "leaf_value" in node:  # a leaf (also a whole one-leaf tree)
                attrs["nodes_featureids"].append(0)
                attrs["nodes_values"].append(0.0)
                attrs["nodes_modes"].append("LEAF")
                attrs["nodes_truenodeids"].append(0)
                attrs["nodes_falsenodeids"].append(0)
                attrs["target_treeids"].append(tree_id)
                attrs["target_nodeids"].append(node_id)
                attrs["target_ids"].append(0)
                attrs["target_weights"].append(float(node["leaf_value"]) * scale)
                return node_id
            if node["decision_type"] != "<=":
                raise ValueError(f"unsupported split {node['decision_type']!r} (numeric '<=' only)")
            slot = len(attrs["nodes_modes"])
            attrs["nodes_featureids"].append(int(node["split_feature"]))
            attrs["nodes_values"].append(_f32_at_most(float(node["threshold"])))
            attrs["nodes_modes"].append("BRANCH_LEQ")
            attrs["nodes_truenodeids"].append(-1)  # patched once the children have ids
            attrs["nodes_falsenodeids"].append(-1)
            attrs["nodes_truenodeids"][slot] = visit(node["left_child"])
            attrs["nodes_falsenodeids"][slot] = visit(node["right_child"])
            return node_id

        visit(tree["tree_structure"])

    ensemble = helper.make_node(
        "TreeEnsembleRegressor",
        [INPUT_NAME],
        ["raw"],
        domain="ai.onnx.ml",
        n_targets=1,
        aggregate_function="SUM",
        base_values=[0.0],
        post_transform="NONE",
        **attrs,
    )
    shape = helper.make_tensor("flat", TensorProto.INT64, [1], [-1])
    nodes, initializers = [ensemble], [shape]
    if base_weights is not None:
        w = np.asarray(base_weights, dtype=np.float32).reshape(n_features, 1)
        initializers.append(
            helper.make_tensor("base_w", TensorProto.FLOAT, [n_features, 1], w.ravel().tolist())
        )
        nodes.append(helper.make_node("MatMul", [INPUT_NAME, "base_w"], ["base"]))
        nodes.append(helper.make_node("Add", ["trees", "base"], ["raw"]))
        ensemble.output[0] = "trees"
    nodes.append(helper.make_node("Reshape", ["raw", "flat"], [OUTPUT_NAME]))
    graph = helper.make_graph(
        nodes,
        "lightgbm_ranker",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["N", n_features])],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["N"])],
        initializer=initializers,
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET), helper.make_opsetid("ai.onnx.ml", ML_OPSET)],
        producer_name="kindred.trainer.lgbm_onnx",
    )
    model.ir_version = 8
    onnx.checker.check_model(model)
    return bytes(model.SerializeToString())


__all__ = ["INPUT_NAME", "ML_OPSET", "OPSET", "OUTPUT_NAME", "booster_to_onnx", "boosters_to_onnx"]
