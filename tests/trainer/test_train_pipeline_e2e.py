"""End to end: generate a small platform, run the whole Ray pipeline with the tiny config, check artefacts.

Slow (~1 min: Ray start-up and two Ray Train fits dominate). Run with `pytest -m slow tests/trainer`.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("ray")

from kindred.config import Settings
from kindred.data.generate import generate_platform
from kindred.features import RANKER_FEATURES, USER_TOWER_FEATURES, user_tower_features
from kindred.models import current_version, load_array, load_model, read_manifest
from trainer.config import load_config
from trainer.pipeline import run

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Settings, object, list[str]]:
    data_dir = tmp_path_factory.mktemp("platform")
    generate_platform(data_dir, fans=800, creators=100, days=24, seed=2, progress=False)
    settings = Settings.from_env({"KINDRED_DATA_DIR": str(data_dir)})
    lines: list[str] = []
    report = run(settings, load_config("tiny"), out=lines.append)
    return settings, report, lines


def test_every_step_reports_progress_with_timing(trained: tuple[Settings, object, list[str]]) -> None:
    _, report, lines = trained
    for n, step in enumerate(
        ("ingest", "features", "two-tower", "ranker", "evaluate", "export", "index", "online+promote"), 1
    ):
        assert any(line.startswith(f"[train {n}/8] {step}: done in") for line in lines), step
    assert report.timings["total"] > 0  # type: ignore[attr-defined]


def test_manifests_describe_the_models(trained: tuple[Settings, object, list[str]]) -> None:
    settings, report, _ = trained
    version = report.version  # type: ignore[attr-defined]
    heads = ["follow_logit", "support_logit", "engage_logit"]
    for name, features, outputs in (
        ("two_tower_user", USER_TOWER_FEATURES, ["user_vector"]),
        ("ranker", RANKER_FEATURES, ["score", *heads]),
    ):
        m = read_manifest(settings.resolved_models_dir, name)
        assert (m["name"], m["version"]) == (name, version)
        assert m["inputs"] == ["features"] and m["outputs"] == outputs
        assert m["features"] == list(features)
        assert m["opset"] >= 17
        window = m["data_window"]
        assert window["start"] < window["train_end"] < window["end"]
        assert set(m["metrics"]) >= {"popularity", "two_tower", "two_tower+ranker"}
        assert {"recall@10", "ndcg@10", "recall@50", "ndcg@50"} <= set(m["metrics"]["two_tower"])
        model_file = settings.resolved_models_dir / name / version / "model.onnx"
        assert m["sha256"] == hashlib.sha256(model_file.read_bytes()).hexdigest()
        assert {"torch", "onnxruntime", "ray", "numpy"} <= set(m["libraries"])
        assert m["config"]["name"] == "tiny"
        assert m["parity_max_abs_diff"] <= 1e-4
        assert created_at_is_iso(m["created_at"])
    ranker = read_manifest(settings.resolved_models_dir, "ranker")
    assert ranker["objectives"] == ["follow", "support", "engage"]
    # The manifest is written with sorted keys: the objectives' order is the list above, not this dict's.
    assert ranker["objective_outputs"] == dict(zip(ranker["objectives"], heads, strict=True))
    assert ranker["objective_weights"]["follow"] == 1.0 and ranker["candidate_pool"] == "serving"
    assert ranker["objective_weight_selection"]  # the validation scores behind the chosen weights


def test_the_mf_model_ships_with_the_user_tower(trained: tuple[Settings, object, list[str]]) -> None:
    """The mf source's ALS factors travel in the user tower's version and load the way retrieval loads
    them; a fan with follows folds in to a vector that ranks some creators above others."""
    from retrieval_svc.server import load_mf

    settings, report, _ = trained
    tower = load_model(settings.resolved_models_dir, "two_tower_user", expected_features=USER_TOWER_FEATURES)
    mf = load_mf(tower)
    assert mf is not None and mf.version == report.version  # type: ignore[attr-defined]
    version_dir = settings.resolved_models_dir / "two_tower_user" / report.version  # type: ignore[attr-defined]
    assert list(mf.creator_ids) == json.loads((version_dir / "creator_ids.json").read_text())
    assert mf.dim == load_config("tiny").mf.factors
    assert tower.manifest["mf"]["params"]["factors"] == mf.dim
    fans = served_follows(settings)
    vectors = [mf.fold_in(following) for following in fans.values()]
    known = [v for v in vectors if v is not None]
    assert len(known) >= 0.8 * len(fans)
    scores = mf.scores(known[0])
    assert float(scores.max() - scores.min()) > 1e-3


def served_follows(settings: Settings) -> dict[str, list[str]]:
    """fan → following, from the serving rows the trainer wrote to the online store."""
    from kindred.data.catalogue import Catalogue
    from kindred.store.online import open_online_store

    store = open_online_store(settings)
    try:
        rows = store.get("fan", [f.fan_id for f in Catalogue.load(settings.data_dir).fans])
    finally:
        store.close()
    return {
        str(r["fan_id"]): [str(c) for c in r.get("following") or ()] for r in rows if r and r.get("following")
    }


def created_at_is_iso(value: str) -> bool:
    import datetime as dt

    return dt.datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ") is not None


def test_current_pointers_and_index(trained: tuple[Settings, object, list[str]]) -> None:
    settings, report, _ = trained
    version = report.version  # type: ignore[attr-defined]
    assert current_version(settings.resolved_models_dir, "two_tower_user") == version
    assert current_version(settings.resolved_models_dir, "ranker") == version
    from kindred.vectorstore import current_creator_version, open_creator_index

    assert current_creator_version(settings) == version
    index = open_creator_index(settings)
    try:
        assert index.count() == 100
        user = load_model(
            settings.resolved_models_dir, "two_tower_user", expected_features=USER_TOWER_FEATURES
        )
        from kindred.store.online import open_online_store

        store = open_online_store(settings)
        try:
            fan = store.get("fan", ["f000001"])[0]
            creators = store.get("creator", ["c00001"])[0]
            popular = store.get("popular", ["global"])[0]
        finally:
            store.close()
        assert fan is not None and creators is not None and popular is not None
        assert len(popular["creator_ids"]) == 100
        vector = user.run(user_tower_features(fan))[0]
        hits = index.search(vector, k=5)
        assert len(hits) == 5
        # The index holds the same vectors the trainer saved next to the user tower.
        ids = json.loads(
            (settings.resolved_models_dir / "two_tower_user" / version / "creator_ids.json").read_text()
        )
        emb = load_array(settings.resolved_models_dir, "two_tower_user", "creator_embeddings.npy")
        best = int(np.argmax(emb @ vector))
        assert hits[0].point_id == ids[best]
    finally:
        index.close()


def test_serving_features_cover_the_whole_log(trained: tuple[Settings, object, list[str]]) -> None:
    settings, report, _ = trained
    from kindred.store.online import open_online_store

    store = open_online_store(settings)
    try:
        fan = store.get("fan", ["f000001"])[0]
    finally:
        store.close()
    assert fan is not None
    assert fan["as_of"] == pytest.approx(report.split.end)  # type: ignore[attr-defined]
    features_dir: Path = report.features_dir  # type: ignore[attr-defined]
    for part in (
        "train/fans.parquet",
        "train/creators.parquet",
        "serving/fans.parquet",
        "serving/creators.parquet",
    ):
        assert (features_dir / part).is_file()


def test_models_beat_popularity_on_the_hold_out(trained: tuple[Settings, object, list[str]]) -> None:
    _, report, _ = trained
    metrics = report.metrics  # type: ignore[attr-defined]
    assert metrics["two_tower"]["ndcg@10"] > metrics["popularity"]["ndcg@10"]
    assert metrics["two_tower"]["recall@50"] > metrics["popularity"]["recall@50"]
    assert metrics["holdout"]["fans"] > 50


# Runs after the tests above (file order): they check the first run's CURRENT pointers.
@pytest.fixture(scope="module")
def retrained(trained: tuple[Settings, object, list[str]]) -> tuple[Settings, object, object, list[str]]:
    settings, first, _ = trained
    lines: list[str] = []
    second = run(settings, load_config("tiny"), out=lines.append)
    return settings, first, second, lines


def test_a_second_run_is_gated_against_the_first(
    retrained: tuple[Settings, object, object, list[str]],
) -> None:
    settings, first, second, lines = retrained
    models_dir = settings.resolved_models_dir
    v1, v2 = first.version, second.version  # type: ignore[attr-defined]
    first_record = json.loads((models_dir / "ranker" / v1 / "promotion.json").read_text())
    assert first_record["decision"] == "promoted" and first_record["reason"] == "no current model"

    record = second.promotion  # type: ignore[attr-defined]
    for name in ("two_tower_user", "ranker"):
        assert json.loads((models_dir / name / v2 / "promotion.json").read_text()) == record
    assert record["current"]["versions"] == {"two_tower_user": v1, "ranker": v1}
    assert "two_tower_creator" in record["current"]["creator_vectors"]
    current, new = record["current"]["metrics"], record["new"]["metrics"]
    for metrics in (current, new):
        assert {"popularity", "two_tower", "two_tower+ranker", "holdout"} <= set(metrics)
        assert {"ndcg@10", "recall@10", "ndcg@50", "recall@50"} <= set(metrics["two_tower+ranker"])
    assert new == second.metrics  # type: ignore[attr-defined]
    assert current["popularity"] == new["popularity"] and current["holdout"] == new["holdout"]
    # Same data, so the same hold-out: the first run's models, re-scored from their ONNX files, give the
    # numbers that run measured with torch. (Not exactly: a score difference ≤ 1e-6 between torch and
    # onnxruntime can break a tie the other way and move one item.)
    for model in ("two_tower", "two_tower+ranker"):
        for metric, value in first.metrics[model].items():  # type: ignore[attr-defined]
            assert current[model][metric] == pytest.approx(value, abs=5e-3), (model, metric)

    passed = all(c["passed"] for c in record["checks"])
    assert {c["metric"] for c in record["checks"]} == {"ndcg@10", "recall@10"}
    assert record["decision"] == ("promoted" if passed else "rejected") and not record["forced"]
    expected = v2 if passed else v1
    from kindred.vectorstore import current_creator_version

    assert current_version(models_dir, "two_tower_user") == current_version(models_dir, "ranker") == expected
    assert current_creator_version(settings) == expected
    assert any(line.strip().startswith("decision: ") for line in lines)
