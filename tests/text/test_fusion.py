"""kindred.text.fusion: normalisation, fusion order, files, and weights learned from judgements."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import numpy as np
import pytest

from kindred.errors import InvalidArgument
from kindred.text.fusion import (
    FitExample,
    FusionModel,
    FusionTerm,
    ranker_feature_names,
    ranker_features,
    rescore_union,
)


def ndcg10(order: list[str], rels: dict[str, float]) -> float:
    dcg = sum(rels.get(d, 0) / math.log2(i + 2) for i, d in enumerate(order[:10]))
    ideal = sorted((r for r in rels.values() if r > 0), reverse=True)[:10]
    idcg = sum(r / math.log2(i + 2) for i, r in enumerate(ideal))
    return dcg / idcg if idcg else 0.0


def test_fuse_minmax_mix_and_contributions() -> None:
    model = FusionModel([FusionTerm("bm25", "minmax", 0.5), FusionTerm("dense", "minmax", 0.5)])
    hits = {
        "bm25": [("a", 12.0), ("b", 8.0), ("c", 2.0)],
        "dense": [("b", 0.9), ("d", 0.7), ("a", 0.5)],
        "ignored": [("z", 100.0)],
    }
    fused = model.fuse(hits)
    assert [h.doc_id for h in fused] == ["b", "a", "d", "c"]  # z: a retriever the model does not use
    b = fused[0]
    assert b.contributions == pytest.approx({"bm25:minmax": 0.5 * 0.6, "dense:minmax": 0.5})
    assert b.score == pytest.approx(sum(b.contributions.values()))
    c = fused[-1]  # absent from dense: scored as dense's last hit (min-max 0)
    assert c.contributions["dense:minmax"] == 0.0 and c.score == 0.0
    assert [h.doc_id for h in model.fuse(hits, limit=2)] == ["b", "a"]
    assert model.fuse({}) == []


def test_rrf_and_zscore_terms_and_tie_break() -> None:
    rrf = FusionModel([FusionTerm("x", "rrf", 1.0), FusionTerm("y", "rrf", 1.0)], rrf_k=60)
    fused = rrf.fuse({"x": [("p", 5.0), ("q", 1.0)], "y": [("q", 3.0), ("p", 2.0)]})
    assert [h.doc_id for h in fused] == ["p", "q"]  # equal RRF scores: ties go to the smaller id
    assert fused[0].score == pytest.approx(1 / 61 + 1 / 62)
    z = FusionModel([FusionTerm("x", "zscore", 1.0)]).fuse({"x": [("a", 3.0), ("b", 1.0)]})
    assert [round(h.score, 6) for h in z] == [1.0, -1.0]


def test_save_load_round_trip_and_validation(tmp_path: Path) -> None:
    model = FusionModel(
        [FusionTerm("bm25", "minmax", 0.3), FusionTerm("dense_tuned", "zscore", 0.7)],
        rrf_k=20,
        info={"fitted_on": 12},
    )
    path = tmp_path / "fusion.json"
    model.save(path)
    again = FusionModel.load(path)
    assert again.terms == model.terms and again.rrf_k == 20 and again.info == {"fitted_on": 12}
    assert again.retrievers == ("bm25", "dense_tuned")
    assert FusionModel.default().retrievers == ("bm25", "dense")

    bad = model.to_dict()
    bad["terms"][1]["norm"] = "softmax"
    path.write_text(json.dumps(bad))
    with pytest.raises(InvalidArgument) as err:
        FusionModel.load(path)
    assert err.value.field == "terms[1].norm"
    bad["terms"][1] = {"retriever": "dense", "norm": "minmax", "weight": "heavy"}
    path.write_text(json.dumps(bad))
    with pytest.raises(InvalidArgument) as err:
        FusionModel.load(path)
    assert err.value.field == "terms[1].weight"
    path.write_text("{not json")
    with pytest.raises(InvalidArgument):
        FusionModel.load(path)


def synthetic_examples(n: int, seed: int) -> list[FitExample]:
    """Queries where BM25 is the stronger retriever and dense a weaker but independent one: a mix of the
    two ranks the relevant document best."""
    rng = random.Random(seed)
    out = []
    for q in range(n):
        docs = [f"q{q}d{i}" for i in range(30)]
        rel = docs[0]
        bm = {d: rng.gauss(0, 1) for d in docs}
        de = {d: rng.gauss(0, 1) for d in docs}
        bm[rel] += 1.6
        de[rel] += 1.0
        hits = {
            "bm25": sorted(bm.items(), key=lambda kv: -kv[1])[:20],
            "dense": sorted(de.items(), key=lambda kv: -kv[1])[:20],
        }
        out.append(FitExample(hits=hits, relevance={rel: 1.0}))
    return out


def mean_ndcg(model: FusionModel, examples: list[FitExample]) -> float:
    return sum(ndcg10([h.doc_id for h in model.fuse(ex.hits)], dict(ex.relevance)) for ex in examples) / len(
        examples
    )


def test_fit_learns_a_mix_that_beats_each_retriever_on_held_out_queries() -> None:
    train, held = synthetic_examples(300, seed=1), synthetic_examples(300, seed=2)
    model = FusionModel.fit(train, retrievers=["bm25", "dense"])
    assert set(model.retrievers) == {"bm25", "dense"}, model
    # The objective fit() reports is the NDCG fuse() produces (same candidates, same tie-break).
    assert model.info["train_ndcg"] == pytest.approx(mean_ndcg(model, train), abs=1e-6)
    alone = [FusionModel([FusionTerm(r, "minmax", 1.0)]) for r in ("bm25", "dense")]
    got = mean_ndcg(model, held)
    assert all(got > mean_ndcg(m, held) + 0.02 for m in alone), (got, model)
    convex = FusionModel.fit(train, retrievers=["bm25", "dense"], norms=["minmax"])
    weight = {t.retriever: t.weight for t in convex.terms}
    assert weight["bm25"] > weight["dense"] > 0  # the stronger signal gets the larger weight


def test_fit_rejects_empty_and_unknown_normalisation() -> None:
    with pytest.raises(InvalidArgument) as err:
        FusionModel.fit([], retrievers=["bm25"])
    assert err.value.field == "examples"
    with pytest.raises(InvalidArgument) as err:
        FusionModel.fit(synthetic_examples(3, 0), retrievers=["bm25"], norms=["log"])
    assert err.value.field == "norms"


def test_union_rescoring_gives_every_candidate_each_retrievers_real_score() -> None:
    # "c" is BM25's best but just outside dense's list; dense actually scores it 0.89 (nearly the top).
    hits = {
        "bm25": [("c", 10.0), ("a", 9.0), ("b", 1.0)],
        "dense": [("a", 0.9), ("b", 0.89), ("d", 0.1)],
    }
    rescored = {"bm25": {"d": 0.5}, "dense": {"c": 0.89}}
    lists_only = FusionModel([FusionTerm("bm25", "minmax", 0.5), FusionTerm("dense", "minmax", 0.5)])
    assert [h.doc_id for h in lists_only.fuse(hits, rescored=rescored)][:2] == ["a", "c"]  # rescore off
    model = FusionModel(list(lists_only.terms), rescore=True)
    fused = model.fuse(hits, rescored=rescored)
    assert [h.doc_id for h in fused][:2] == ["c", "a"]
    c = fused[0]
    # min-max over the union's real dense scores (0.1 .. 0.9), not "below the list" (0).
    assert c.contributions["dense:minmax"] == pytest.approx(0.5 * (0.89 - 0.1) / 0.8)
    merged = rescore_union(hits, rescored, ["bm25", "dense"])
    assert merged["dense"][:2] == [("a", 0.9), ("b", 0.89)] and ("c", 0.89) in merged["dense"]
    assert ("d", 0.5) in merged["bm25"]
    # Without rescored scores the same model still fuses the plain lists.
    assert [h.doc_id for h in model.fuse(hits)] == [h.doc_id for h in lists_only.fuse(hits)]


def test_ranker_features_are_finite_and_named() -> None:
    hits = {"bm25": [("a", 3.0)], "dense": [("a", 0.5), ("b", 0.5)]}
    x = ranker_features(hits, hits, ["a", "b"], ["bm25", "dense"], 60)
    assert x.shape == (2, len(ranker_feature_names(["bm25", "dense"]))) and x.dtype == np.float32
    assert np.isfinite(x).all()  # constant lists: no division by zero reaches the ranker


def test_lambdarank_fusion_file_round_trip_and_integrity(tmp_path: Path) -> None:
    from kindred.errors import ModelMismatch
    from trainer.search_tuning import fit_ranked_fusion, fused_ndcg

    train = synthetic_examples(150, seed=3)
    model = fit_ranked_fusion(train, retrievers=["bm25", "dense"], rounds=30)
    assert model.kind == "lambdarank" and model.rescore and model.retrievers == ("bm25", "dense")
    path = tmp_path / "fusion.json"
    model.save(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fusion.json", "fusion.onnx"]
    again = FusionModel.load(path)
    ex = train[0]
    assert [(h.doc_id, round(h.score, 5)) for h in again.fuse(ex.hits)] == [
        (h.doc_id, round(h.score, 5)) for h in model.fuse(ex.hits)
    ]
    held = synthetic_examples(150, seed=4)
    alone = FusionModel([FusionTerm("bm25", "minmax", 1.0)])
    assert fused_ndcg(again, held) > fused_ndcg(alone, held) + 0.02
    # A name term added on top (the service's name matching) keeps the ranker.
    plus = again.with_term(FusionTerm("name", "minmax", 0.1))
    assert plus.ranker is again.ranker and plus.retrievers == ("bm25", "dense", "name")

    data = json.loads(path.read_text())
    (tmp_path / "fusion.onnx").write_bytes(b"not the model")
    with pytest.raises(ModelMismatch):
        FusionModel.load(path)
    data["ranker"]["features"] = ["bm25:raw"]
    path.write_text(json.dumps(data))
    with pytest.raises(InvalidArgument) as err:
        FusionModel.load(path)
    assert err.value.field == "ranker.features"
    data["kind"] = "forest"
    path.write_text(json.dumps(data))
    with pytest.raises(InvalidArgument) as err:
        FusionModel.load(path)
    assert err.value.field == "kind"
