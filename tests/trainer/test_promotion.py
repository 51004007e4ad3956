"""The promotion gate without Ray: tolerance maths, the first model, rejection leaves CURRENT alone, force,
and the current model re-scored through onnxruntime on the new hold-out reproducing its torch numbers."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from kindred.data.catalogue import Catalogue
from kindred.errors import ModelMismatch
from kindred.features import Interactions
from kindred.models import current_version, promote, write_model
from kindred.v1 import events_pb2
from trainer.config import PromotionConfig, TrainConfig, config_from_dict, load_config
from trainer.datasets import Snapshot, build_snapshot, time_split
from trainer.promotion import (
    PROMOTION_FILE,
    check_metric,
    decide,
    format_record,
    run_gate,
    score_on_holdout,
)

FOLLOWS = frozenset({int(events_pb2.EventType.EVENT_TYPE_FOLLOW)})
NAMES = ("two_tower_user", "ranker")
GATE = PromotionConfig(metrics=("ndcg@10", "recall@10"), tolerance_abs=0.01, tolerance_rel=0.05)


def metrics(ndcg: float, recall: float, model: str = "two_tower+ranker") -> dict[str, dict[str, float]]:
    return {model: {"ndcg@10": ndcg, "recall@10": recall}, "holdout": {"fans": 10.0}}


# ------------------------------------------------------------------------------------------------
# Tolerance maths and the decision
# ------------------------------------------------------------------------------------------------


def test_the_allowance_is_the_larger_of_absolute_and_relative() -> None:
    # current 0.1: 5 % is 0.005 < 0.01, so the absolute allowance applies.
    small = check_metric("ndcg@10", 0.0905, 0.1, GATE)
    assert small.allowed_drop == pytest.approx(0.01) and small.passed
    assert not check_metric("ndcg@10", 0.0895, 0.1, GATE).passed
    # current 0.4: 5 % is 0.02 > 0.01, so the relative allowance applies.
    big = check_metric("ndcg@10", 0.385, 0.4, GATE)
    assert big.allowed_drop == pytest.approx(0.02) and big.passed
    assert big.delta == pytest.approx(-0.015)
    assert not check_metric("ndcg@10", 0.379, 0.4, GATE).passed


def test_a_drop_exactly_at_the_allowance_passes_and_improvements_always_do() -> None:
    only_abs = PromotionConfig(tolerance_abs=0.25, tolerance_rel=0.0)
    assert check_metric("ndcg@10", 0.5, 0.75, only_abs).passed  # exactly −0.25 (binary-exact numbers)
    assert not check_metric("ndcg@10", 0.4999, 0.75, only_abs).passed
    strict = PromotionConfig(tolerance_abs=0.0, tolerance_rel=0.0)
    assert check_metric("recall@10", 0.3, 0.3, strict).passed
    assert check_metric("recall@10", 0.31, 0.3, strict).passed
    assert not check_metric("recall@10", 0.2999, 0.3, strict).passed
    assert not check_metric("recall@10", math.nan, 0.3, GATE).passed


def test_first_model_is_promoted_with_reason_no_current_model() -> None:
    d = decide(metrics(0.01, 0.01), None, GATE)
    assert d.promoted and d.outcome == "promoted" and d.reason == "no current model"
    assert d.checks == () and not d.forced


def test_one_failing_metric_rejects_and_the_reason_names_it() -> None:
    d = decide(metrics(0.30, 0.20), metrics(0.30, 0.25), GATE)  # recall −0.05 > allowed 0.0125
    assert not d.promoted and d.outcome == "rejected"
    assert [c.passed for c in d.checks] == [True, False]
    assert "recall@10" in d.reason and "ndcg@10" not in d.reason
    ok = decide(metrics(0.295, 0.245), metrics(0.30, 0.25), GATE)
    assert ok.promoted and all(c.passed for c in ok.checks)


def test_force_promotes_and_keeps_what_the_gate_said() -> None:
    d = decide(metrics(0.1, 0.1), metrics(0.3, 0.3), GATE, force=True)
    assert d.promoted and d.forced and not d.gate_promoted
    assert "--force-promote" in d.reason and "rejected" in d.reason
    passing = decide(metrics(0.3, 0.3), metrics(0.3, 0.3), GATE, force=True)
    assert passing.promoted and passing.forced and passing.gate_promoted


def test_the_gate_reads_only_its_model_row_and_refuses_missing_metrics() -> None:
    new = {**metrics(0.0, 0.0, "two_tower"), **metrics(0.3, 0.3)}
    cur = {**metrics(0.9, 0.9, "two_tower"), **metrics(0.3, 0.3)}
    assert decide(new, cur, GATE).promoted  # the two-tower alone got worse; the served pipeline did not
    with pytest.raises(ValueError, match="ndcg@10"):
        decide({"two_tower+ranker": {"recall@10": 0.1}}, None, GATE)
    with pytest.raises(ValueError, match="two_tower\\+ranker"):
        decide(metrics(0.3, 0.3, "two_tower"), None, GATE)


def test_promotion_config_is_validated_when_loaded() -> None:
    default = load_config("default")
    assert default.promotion.model == "two_tower+ranker"
    assert set(default.promotion.metrics) == {"ndcg@10", "recall@10"}
    assert load_config("tiny").promotion == default.promotion
    with pytest.raises(ValueError, match="≥ 0"):
        config_from_dict({"promotion": {"tolerance_abs": -0.1}})
    with pytest.raises(ValueError, match="mrr@10"):
        config_from_dict({"promotion": {"metrics": ["mrr@10"]}})
    with pytest.raises(ValueError, match=r"eval\.ks"):
        config_from_dict({"promotion": {"metrics": ["ndcg@20"]}})
    with pytest.raises(ValueError, match="tolerance_abss"):
        config_from_dict({"promotion": {"tolerance_abss": 0.1}})


# ------------------------------------------------------------------------------------------------
# run_gate on a real registry directory, with model sets faked (no ONNX)
# ------------------------------------------------------------------------------------------------


class FakeModels:
    """Two-tower vectors given directly; the ranker keeps retrieval's order (constant score)."""

    def __init__(self, user: npt.NDArray[np.float32], creators: npt.NDArray[np.float32]) -> None:
        self.user, self.creators = user, creators
        self.creator_vectors_from = "fake"

    def user_vectors(self, user_x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        assert len(user_x) == len(self.user)
        return self.user

    def creator_vectors(
        self, creator_ids: Sequence[str], creator_x: npt.NDArray[np.float32]
    ) -> npt.NDArray[np.float32]:
        return self.creators

    def ranker_scores(self, x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        return np.zeros(len(x), np.float32)


@pytest.fixture(scope="module")
def holdout(platform: tuple[Catalogue, Interactions]) -> tuple[Snapshot, list[str]]:
    catalogue, ev = platform
    ids = [c.creator_id for c in catalogue.creators]
    split = time_split(ev, 0.3)
    test = build_snapshot(ev, catalogue, ids, cut=split.train_end, window_end=split.end, label_codes=FOLLOWS)
    return test, ids


def oracle(holdout: tuple[Snapshot, list[str]]) -> FakeModels:
    """Each fan's vector points at its own discoveries: near-perfect NDCG."""
    test, n = holdout[0], len(holdout[1])
    u = np.zeros((len(test.fan_ids), n), np.float32)
    for i, lab in enumerate(test.labels):
        u[i, list(lab)] = 1.0
    return FakeModels(u, np.eye(n, dtype=np.float32))


def noise(holdout: tuple[Snapshot, list[str]], seed: int = 0) -> FakeModels:
    test, n = holdout[0], len(holdout[1])
    rng = np.random.default_rng(seed)
    return FakeModels(rng.normal(size=(len(test.fan_ids), n)).astype(np.float32), np.eye(n, dtype=np.float32))


def tiny_cfg() -> TrainConfig:
    return config_from_dict({"eval": {"ks": [10], "candidates_two_tower": 5, "candidates_popular": 3}})


def register(models_dir: Path, version: str, *, current: bool) -> None:
    """A complete (if fake) registry version of both models; promoted if `current`."""
    for name in NAMES:
        write_model(
            models_dir, name, version, b"not really onnx", {"features": [], "inputs": [], "outputs": []}
        )
        if current:
            promote(models_dir, name, version)


class Gate:
    """run_gate with the current model set replaced by `current_models`, recording index switches."""

    def __init__(self, models_dir: Path, holdout: tuple[Snapshot, list[str]]) -> None:
        self.models_dir, (self.test, self.ids) = models_dir, holdout
        self.index_promoted: list[str] = []
        self.lines: list[str] = []
        self.cfg = tiny_cfg()

    def __call__(
        self, version: str, new: FakeModels, current_models: Any = None, *, force: bool = False
    ) -> dict[str, Any]:
        register(self.models_dir, version, current=False)

        def load_current(models_dir: Path, user_v: str, ranker_v: str) -> Any:
            assert (user_v, ranker_v) == tuple(current_version(models_dir, n) for n in NAMES)
            if isinstance(current_models, Exception):
                raise current_models
            return current_models

        return run_gate(
            models_dir=self.models_dir,
            model_names=NAMES,
            version=version,
            new_metrics=score_on_holdout(new, self.test, self.ids, self.cfg),
            test=self.test,
            creator_ids=self.ids,
            cfg=self.cfg,
            force=force,
            promote_index=self.index_promoted.append,
            out=self.lines.append,
            load_current=load_current,
        )

    def record(self, version: str, name: str = "ranker") -> dict[str, Any]:
        data: dict[str, Any] = json.loads((self.models_dir / name / version / PROMOTION_FILE).read_text())
        return data

    def current(self) -> list[str | None]:
        return [current_version(self.models_dir, n) for n in NAMES]


def test_first_model_ever_is_promoted_and_switches_models_and_index(
    tmp_path: Path, holdout: tuple[Snapshot, list[str]]
) -> None:
    gate = Gate(tmp_path, holdout)
    rec = gate("v1", noise(holdout))
    assert rec["decision"] == "promoted" and rec["reason"] == "no current model"
    assert gate.current() == ["v1", "v1"] and gate.index_promoted == ["v1"]
    for name in NAMES:
        assert gate.record("v1", name) == rec
    assert rec["current"]["metrics"] is None and rec["new"]["metrics"]["two_tower+ranker"]
    assert any("decision: PROMOTED" in line for line in gate.lines)


def test_a_worse_model_is_rejected_and_current_stays(
    tmp_path: Path, holdout: tuple[Snapshot, list[str]]
) -> None:
    gate = Gate(tmp_path, holdout)
    register(tmp_path, "v1", current=True)
    rec = gate("v2", noise(holdout), oracle(holdout))
    assert rec["decision"] == "rejected" and not rec["forced"]
    assert gate.current() == ["v1", "v1"] and gate.index_promoted == []
    assert (tmp_path / "ranker" / "v2" / "model.onnx").is_file()  # the rejected model stays on disk
    saved = gate.record("v2", "two_tower_user")
    assert saved["current"]["versions"] == {"two_tower_user": "v1", "ranker": "v1"}
    cur, new = saved["current"]["metrics"], saved["new"]["metrics"]
    assert cur["two_tower+ranker"]["ndcg@10"] > new["two_tower+ranker"]["ndcg@10"] + 0.1
    assert cur["popularity"] == new["popularity"] and cur["holdout"] == new["holdout"]  # one hold-out
    assert {c["metric"] for c in saved["checks"]} == {"ndcg@10", "recall@10"}
    assert not all(c["passed"] for c in saved["checks"])
    text = "\n".join(gate.lines)
    assert "two_tower+ranker (current)" in text and "two_tower+ranker (new)" in text
    assert "decision: REJECTED" in text and "CURRENT unchanged" in text


def test_force_promote_overrides_a_rejection_and_says_so(
    tmp_path: Path, holdout: tuple[Snapshot, list[str]]
) -> None:
    gate = Gate(tmp_path, holdout)
    register(tmp_path, "v1", current=True)
    rec = gate("v2", noise(holdout), oracle(holdout), force=True)
    assert rec["decision"] == "promoted" and rec["forced"] and rec["gate_decision"] == "rejected"
    assert gate.current() == ["v2", "v2"] and gate.index_promoted == ["v2"]


def test_a_better_model_replaces_the_current_one(tmp_path: Path, holdout: tuple[Snapshot, list[str]]) -> None:
    gate = Gate(tmp_path, holdout)
    register(tmp_path, "v1", current=True)
    rec = gate("v2", oracle(holdout), noise(holdout))
    assert rec["decision"] == "promoted" and rec["gate_decision"] == "promoted"
    assert all(c["passed"] and c["delta"] > 0 for c in rec["checks"])
    assert gate.current() == ["v2", "v2"] and gate.index_promoted == ["v2"]


def test_a_current_model_that_cannot_be_loaded_does_not_block(
    tmp_path: Path, holdout: tuple[Snapshot, list[str]]
) -> None:
    gate = Gate(tmp_path, holdout)
    register(tmp_path, "v1", current=True)
    rec = gate("v2", noise(holdout), ModelMismatch("trained on a different feature order"))
    assert rec["decision"] == "promoted" and "cannot be evaluated" in rec["reason"]
    assert "different feature order" in rec["current"]["error"]
    assert gate.current() == ["v2", "v2"]


def test_a_half_promoted_current_set_counts_as_none(
    tmp_path: Path, holdout: tuple[Snapshot, list[str]]
) -> None:
    gate = Gate(tmp_path, holdout)
    register(tmp_path, "v1", current=False)
    promote(tmp_path, "ranker", "v1")  # the user tower was never switched
    rec = gate("v2", noise(holdout), oracle(holdout))  # would lose against v1 if v1 were complete
    assert rec["decision"] == "promoted" and "two_tower_user never promoted" in rec["reason"]
    assert gate.current() == ["v2", "v2"]


def test_the_cli_flag_reaches_the_pipeline() -> None:
    from trainer.cli import build_parser

    assert build_parser().parse_args(["train", "--force-promote"]).force_promote is True
    assert build_parser().parse_args(["train"]).force_promote is False


def test_models_scored_on_another_hold_out_are_refused(
    tmp_path: Path, holdout: tuple[Snapshot, list[str]], platform: tuple[Catalogue, Interactions]
) -> None:
    gate = Gate(tmp_path, holdout)
    register(tmp_path, "v1", current=True)
    register(tmp_path, "v2", current=False)
    test, ids = holdout
    catalogue, ev = platform
    other = build_snapshot(
        ev, catalogue, ids, cut=test.cut - 86_400.0, window_end=test.cut, label_codes=FOLLOWS
    )
    with pytest.raises(RuntimeError, match="same hold-out"):
        run_gate(
            models_dir=tmp_path,
            model_names=NAMES,
            version="v2",
            new_metrics=score_on_holdout(noise((other, ids)), other, ids, gate.cfg),
            test=test,
            creator_ids=ids,
            cfg=gate.cfg,
            force=False,
            promote_index=gate.index_promoted.append,
            out=gate.lines.append,
            load_current=lambda *_: noise(holdout),
        )
    assert gate.current() == ["v1", "v1"]


def test_format_record_without_a_current_model() -> None:
    rec = {
        "version": "v1",
        "decision": "promoted",
        "reason": "no current model",
        "gate": {
            "model": "two_tower+ranker",
            "metrics": ["ndcg@10"],
            "tolerance_abs": 0.01,
            "tolerance_rel": 0.05,
        },
        "holdout": {"fans": 3.0, "discoveries": 4.0},
        "current": {"versions": {"ranker": None}, "metrics": None},
        "new": {"metrics": metrics(0.2, 0.3)},
        "checks": [],
    }
    text = format_record(rec)
    assert "decision: PROMOTED — no current model" in text and "current: —" in text


# ------------------------------------------------------------------------------------------------
# The real thing: torch models exported to a registry, the current set re-scored with onnxruntime
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def exported(
    tmp_path_factory: pytest.TempPathFactory, platform: tuple[Catalogue, Interactions]
) -> dict[str, Any]:
    """Trains tiny towers + ranker on the synthetic platform and writes them as registry version v1."""
    torch = pytest.importorskip("torch")
    from kindred.features import RANKER_FEATURES, USER_TOWER_FEATURES
    from kindred.models import npy_bytes
    from trainer import ranker as rk
    from trainer import two_tower as tt
    from trainer.datasets import build_training_snapshots, objective_label_codes
    from trainer.evaluate import evaluate_holdout
    from trainer.export import build_manifest, export_onnx
    from trainer.pipeline import pack_two_tower
    from trainer.promotion import export_creator_tower

    torch.manual_seed(0)
    catalogue, ev = platform
    ids = [c.creator_id for c in catalogue.creators]
    cfg = config_from_dict(
        {
            "two_tower": {"dim": 8, "hidden": 16, "creator_id_dim": 4, "creator_hidden": 8, "epochs": 3},
            "ranker": {"hidden": [8], "epochs": 3, "candidates_two_tower": 8, "candidates_popular": 4},
            "eval": {"ks": [10], "candidates_two_tower": 8, "candidates_popular": 4},
        }
    )
    split = time_split(ev, 0.25)
    snaps = build_training_snapshots(
        ev,
        catalogue,
        ids,
        split,
        n_cuts=3,
        warmup_fraction=0.3,
        label_codes=FOLLOWS,
        objective_codes=objective_label_codes(cfg.ranker.objectives),
    )
    test = build_snapshot(ev, catalogue, ids, cut=split.train_end, window_end=split.end, label_codes=FOLLOWS)
    quiet = lambda _: None  # noqa: E731
    tower = tt.build_model(
        tt.train_two_tower(pack_two_tower(snaps, lambda _: True), cfg.two_tower, seed=0, log=quiet),
        cfg.two_tower,
    )
    rdata = rk.build_ranker_data(
        snaps,
        [tt.user_vectors(tower, s.user_x) for s in snaps],
        [tt.creator_vectors(tower, s.creator_x) for s in snaps],
        lambda _: True,
        ids,
        cfg.ranker,
        seed=0,
    )
    ranker = rk.build_model(rk.train_ranker(rdata, cfg.ranker, seed=0, log=quiet), cfg.ranker)
    torch_metrics = evaluate_holdout(
        test,
        tt.user_vectors(tower, test.user_x),
        tt.creator_vectors(tower, test.creator_x),
        ids,
        ks=cfg.eval.ks,
        n_two_tower=cfg.eval.candidates_two_tower,
        n_popular=cfg.eval.candidates_popular,
        ranker_score=lambda x: rk.score(ranker, x),
    )
    models_dir = tmp_path_factory.mktemp("models")
    window = {"start": split.start, "train_end": split.train_end, "end": split.end}

    def manifest(name: str, output: str, features: Sequence[str]) -> dict[str, Any]:
        return build_manifest(
            name=name,
            version="v1",
            output_name=output,
            features=features,
            data_window=window,
            metrics=torch_metrics,
            config=cfg.to_dict(),
            parity_max_abs_diff=0.0,
            extra={"embedding_dim": cfg.two_tower.dim},
        )

    # The stored serving embeddings deliberately differ from what the tower gives at the hold-out's start
    # (features as of the very end), so the test can tell which path produced the current vectors.
    serving = tt.creator_vectors(tower, snaps[0].creator_x)
    write_model(
        models_dir,
        "two_tower_user",
        "v1",
        export_onnx(tower.user, len(USER_TOWER_FEATURES), "user_vector"),
        manifest("two_tower_user", "user_vector", USER_TOWER_FEATURES),
        extra_files={
            "creator_embeddings.npy": npy_bytes(serving),
            "creator_ids.json": (json.dumps(ids) + "\n").encode(),
        },
    )
    write_model(
        models_dir,
        "ranker",
        "v1",
        export_onnx(ranker, len(RANKER_FEATURES), "score"),
        manifest("ranker", "score", RANKER_FEATURES),
    )
    export_creator_tower(
        tower.creator,
        ids,
        test.creator_x,
        models_dir=models_dir,
        version="v1",
        data_window=window,
        config=cfg.to_dict(),
    )
    for name in NAMES:
        promote(models_dir, name, "v1")
    return {"models_dir": models_dir, "test": test, "ids": ids, "cfg": cfg, "torch_metrics": torch_metrics}


def test_current_models_rescored_with_onnxruntime_reproduce_their_torch_metrics(
    exported: dict[str, Any],
) -> None:
    from trainer.promotion import CREATOR_TOWER, RegistryModels

    models_dir, test, ids, cfg = exported["models_dir"], exported["test"], exported["ids"], exported["cfg"]
    assert (models_dir / CREATOR_TOWER / "v1" / "model.onnx").is_file()
    assert current_version(models_dir, CREATOR_TOWER) is None  # never served, so never promoted
    models = RegistryModels(models_dir, "v1", "v1")
    assert CREATOR_TOWER in models.creator_vectors_from
    got = score_on_holdout(models, test, ids, cfg)
    want = exported["torch_metrics"]
    assert set(got) == set(want)
    for row in want:
        for metric, value in want[row].items():
            assert got[row][metric] == pytest.approx(value, abs=1e-9), (row, metric)
    # A creator the current version never saw gets a zero vector, and is counted.
    vecs = models.creator_vectors([*ids, "c-new"], np.concatenate([test.creator_x, test.creator_x[:1]]))
    assert models.unknown_creators == 1 and not vecs[-1].any() and vecs[0].any()


def test_without_a_creator_tower_the_stored_embeddings_are_used_and_flagged(
    exported: dict[str, Any], tmp_path: Path
) -> None:
    import shutil

    from trainer.promotion import CREATOR_TOWER, RegistryModels

    models_dir = tmp_path / "models"
    shutil.copytree(exported["models_dir"], models_dir)
    shutil.rmtree(models_dir / CREATOR_TOWER)
    test, ids, cfg = exported["test"], exported["ids"], exported["cfg"]
    models = RegistryModels(models_dir, "v1", "v1")
    assert "stored serving embeddings" in models.creator_vectors_from
    models.check_stored_window(test.cut)  # they were computed as of the data's end, after the cut
    assert models.caveat is not None and "seen part of the hold-out window" in models.caveat
    stored = score_on_holdout(models, test, ids, cfg)["two_tower"]
    assert stored != exported["torch_metrics"]["two_tower"]  # other vectors, other numbers


def test_run_gate_with_the_real_registry_models(exported: dict[str, Any], tmp_path: Path) -> None:
    """The current v1 re-scored from ONNX; a new 'v2' with exactly v1's numbers ties and is promoted."""
    import shutil

    models_dir = tmp_path / "models"
    shutil.copytree(exported["models_dir"], models_dir)
    test, ids, cfg = exported["test"], exported["ids"], exported["cfg"]
    register(models_dir, "v2", current=False)
    switched: list[str] = []
    rec = run_gate(
        models_dir=models_dir,
        model_names=NAMES,
        version="v2",
        new_metrics=exported["torch_metrics"],
        test=test,
        creator_ids=ids,
        cfg=cfg.replace(promotion=PromotionConfig(tolerance_abs=0.0, tolerance_rel=0.0)),
        force=False,
        promote_index=switched.append,
        out=lambda _: None,
    )
    assert rec["decision"] == "promoted" and all(
        c["delta"] == pytest.approx(0.0, abs=1e-9) for c in rec["checks"]
    )
    assert rec["current"]["manifest_metrics"]["metrics"]["two_tower+ranker"]
    # v1's ranker was exported with a single "score" output: recorded as such, and still comparable.
    assert rec["current"]["ranker_objectives"]["single_score"] is True
    assert switched == ["v2"] and current_version(models_dir, "ranker") == "v2"
