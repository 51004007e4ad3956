"""Multi-objective ranking at serving.

Real ONNX rankers in the trainer's export layout (score, then one "<objective>_logit" output per head;
tests/trainer checks the trainer exports exactly that), loaded through kindred.models.load_model and run
by onnxruntime: heads combined by the manifest's weights or ranking.json's, per-objective scores on the
candidates; old single-score models still serve, and weights they cannot honour fail."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from kindred.errors import ModelMismatch
from kindred.features import RANKER_FEATURES
from kindred.models import load_model, write_model
from ranking_svc.domain import RetrievalResult, ScoredCandidate
from ranking_svc.objectives import MultiObjectiveRanker, load_weight_overrides, wrap_ranker
from ranking_svc.recommender import Recommender

OBJECTIVES = ("follow", "support", "engage")
SCORE, HEADS = "score", [f"{n}_logit" for n in OBJECTIVES]  # trainer.ranker's output names
F = len(RANKER_FEATURES)
TT = RANKER_FEATURES.index("cross.two_tower_score")
INTEREST = RANKER_FEATURES.index("cross.category_interest")


def ranker_onnx(*, multi: bool) -> bytes:
    """A real ONNX ranker in the trainer's export layout, built directly (no torch export: fast):
    follow = two-tower score, support = interest match, engage = half of each; "score" = follow."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = np.zeros((F, 3), np.float32)
    w[TT, 0], w[INTEREST, 1], w[TT, 2], w[INTEREST, 2] = 1.0, 1.0, 0.5, 0.5
    nodes = [
        helper.make_node("MatMul", ["features", "W"], ["heads"]),
        helper.make_node("MatMul", ["heads", "w"], [SCORE]),
        helper.make_node("Split", ["heads"], [f"{h}_2d" for h in HEADS], axis=1, num_outputs=3),
        *(helper.make_node("Squeeze", [f"{h}_2d", "axis1"], [h]) for h in HEADS),
    ]
    inits = [
        numpy_helper.from_array(w, "W"),
        numpy_helper.from_array(np.array([1.0, 0.0, 0.0], np.float32), "w"),
        numpy_helper.from_array(np.array([1], np.int64), "axis1"),
    ]
    outputs = [SCORE, *HEADS] if multi else [SCORE]
    graph = helper.make_graph(
        nodes,
        "ranker",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", F])],
        [helper.make_tensor_value_info(o, TensorProto.FLOAT, ["batch"]) for o in outputs],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    onnx.checker.check_model(model)
    return model.SerializeToString()


def write_ranker(models_dir: Path, version: str, *, multi: bool) -> None:
    manifest: dict[str, Any] = {
        "inputs": ["features"],
        "outputs": [SCORE, *HEADS] if multi else [SCORE],
        "features": list(RANKER_FEATURES),
    }
    if multi:
        manifest |= {
            "objectives": list(OBJECTIVES),
            "objective_outputs": dict(zip(OBJECTIVES, HEADS, strict=True)),
            "objective_weights": {"follow": 1.0, "support": 0.0, "engage": 0.0},
        }
    write_model(models_dir, "ranker", version, ranker_onnx(multi=multi), manifest)


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("models")
    write_ranker(root, "multi", multi=True)
    write_ranker(root, "single", multi=False)
    return root


def load(models_dir: Path, version: str) -> Any:
    return load_model(models_dir, "ranker", expected_features=RANKER_FEATURES, version=version)


def features(tt: list[float], interest: list[float]) -> np.ndarray:
    x = np.zeros((len(tt), F), np.float32)
    x[:, TT], x[:, INTEREST] = tt, interest
    return x


def test_default_weights_come_from_the_manifest_and_match_the_score_output(models_dir: Path) -> None:
    model = load(models_dir, "multi")
    ranker = wrap_ranker(model)
    assert isinstance(ranker, MultiObjectiveRanker)
    assert ranker.objectives.as_dict() == {"follow": 1.0, "support": 0.0, "engage": 0.0}
    x = features([0.9, 0.1, 0.5], [0.0, 1.0, 1.0])
    combined, per_objective = ranker.run_objectives(x)
    np.testing.assert_allclose(combined, model.run(x), atol=1e-5)  # the graph's own "score"
    np.testing.assert_allclose(combined, [0.9, 0.1, 0.5], atol=1e-5)
    assert set(per_objective) == {"p_follow", "p_support", "p_engage"}
    for probs in per_objective.values():
        assert probs.sum() == pytest.approx(1.0, abs=1e-5) and np.all(probs > 0)  # in-list softmax
    assert np.argmax(per_objective["p_support"]) in (1, 2) and np.argmax(per_objective["p_follow"]) == 0


def test_ranking_json_weights_reorder_the_candidates(models_dir: Path, tmp_path: Path) -> None:
    config = tmp_path / "ranking.json"
    config.write_text(json.dumps({"objective_weights": {"follow": 0.0, "support": 1.0}}))
    ranker = wrap_ranker(load(models_dir, "multi"), load_weight_overrides(config))
    assert ranker.objectives.as_dict() == {"follow": 0.0, "support": 1.0, "engage": 0.0}
    x = features([0.9, 0.1, 0.5], [0.0, 1.0, 0.5])
    assert list(np.argsort(-ranker.run(x))) == [1, 2, 0]  # by interest now, not by the two-tower
    assert list(np.argsort(-wrap_ranker(load(models_dir, "multi")).run(x))) == [0, 2, 1]


def test_the_recommender_puts_every_objective_among_the_stage_scores(models_dir: Path) -> None:
    class Retriever:
        def retrieve(
            self, fan_id: str, k: int, filters: Any, context: Any, timeout_s: float
        ) -> RetrievalResult:
            return RetrievalResult(
                [
                    ScoredCandidate(c, "CANDIDATE_SOURCE_TWO_TOWER", [], {"two_tower": s, "retrieval": s})
                    for c, s in (("c1", 0.2), ("c2", 0.8), ("c3", 0.5))
                ],
                "tt",
                {},
            )

    class Store:
        def get(self, namespace: str, keys: Sequence[str]) -> list[dict[str, Any] | None]:
            if namespace == "creator":
                return [{"creator_id": k, "category": f"cat{k}"} for k in keys]
            return [None for _ in keys]

    ranker = wrap_ranker(load(models_dir, "multi"))
    page = Recommender(Retriever(), Store(), ranker).recommend(
        "f1", 3, filters=None, context=None, timeout_s=1
    )
    assert page.fallback == "" and page.items[0].item_id == "c2"
    for item in page.items:
        assert {"ranker", "p_follow", "p_support", "p_engage"} <= set(item.scores)
    assert sum(c.scores["p_follow"] for c in page.items) == pytest.approx(1.0, abs=1e-5)


def test_an_old_single_score_model_still_serves_but_refuses_objective_weights(models_dir: Path) -> None:
    model = load(models_dir, "single")
    served = wrap_ranker(model)
    assert served is model  # nothing to combine: its "score" is served as before
    x = features([0.9, 0.1], [0.0, 1.0])
    np.testing.assert_allclose(served.run(x), [0.9, 0.1], atol=1e-5)
    with pytest.raises(ModelMismatch, match=r"objective_weights names \['support'\].*single-score"):
        wrap_ranker(model, {"support": 1.0})


def test_weights_the_model_cannot_honour_fail_naming_the_problem(models_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ModelMismatch, match=r"\['comment'\].*follow"):
        wrap_ranker(load(models_dir, "multi"), {"comment": 1.0})
    with pytest.raises(ModelMismatch, match="every objective weight"):
        wrap_ranker(load(models_dir, "multi"), {"follow": 0.0})
    config = tmp_path / "ranking.json"
    for bad in ({"follow": -1}, {"follow": "high"}, {"follow": float("inf")}, ["follow"]):
        config.write_text(json.dumps({"objective_weights": bad}))
        with pytest.raises(ValueError, match="objective_weights"):
            load_weight_overrides(config)
    assert load_weight_overrides(tmp_path / "absent.json") == {}
