"""The promotion gate: a new model replaces the current one only if it is not worse on the hold-out.

    decide(new, current, cfg, force=...)  → Decision          the tolerance maths (pure)
    RegistryModels(models_dir, ...)                           a promoted model set, as the services run it
    run_gate(...)                         → record (dict)     evaluate CURRENT, decide, write, switch

Why the current model is re-evaluated instead of reading the metrics in its manifest: those were
measured on an earlier hold-out window — other fans, another time, another mix of creators — and two
windows differ by more than two models do. Here both model sets are scored on this run's hold-out
snapshot (features as of this run's train end, labels from its hold-out window) by the same code
(trainer.evaluate.evaluate_holdout, same K's, same candidate quotas), so the difference is the models.
The popularity row and the hold-out counts of both sets must come out identical; the gate checks that
before it decides.

"The current model" is what the services serve: the versions `two_tower_user/CURRENT` and
`ranker/CURRENT` point at, loaded by kindred.models.load_model (hash and feature-order checks,
onnxruntime). Creator vectors come from that version's creator tower — exported here as
`two_tower_creator/<version>/`, never served, kept for this comparison — applied to creator features as
of this run's train end, like the new model's. Not from the creator embeddings stored for serving:
those were computed from features as of the end of that run's data, which on a retrain over the same or
overlapping data lies inside this hold-out window — creator features that already count some of the
follows being predicted, and another input than the new model gets. With the tower, re-scoring the
current model on its own hold-out reproduces the numbers its run measured with torch to the 4th
decimal (tests/trainer/test_train_pipeline_e2e.py checks it); with the stored embeddings, on the default
platform, the two-tower row moved by up to 0.005 (NDCG@10 −0.0016, Recall@50 +0.0047) and the gated
two_tower+ranker row by ≤ 0.0004 — small there, but neither zero nor of a known sign. A model set
exported before the creator tower existed falls back to its stored embeddings, and the record says so
(`current.caveat`).

The rule, for each gated metric m (`promotion.metrics` of the ranking `promotion.model`):

    pass(m)  ⇔  new[m] ≥ current[m] − max(tolerance_abs, tolerance_rel × current[m])

promoted ⇔ every gated metric passes. First model ever → promoted, reason "no current model". A current
model set that cannot be evaluated against today's feature order or files (ModelMismatch,
FailedPrecondition: the services would refuse it too) → promoted, with the error as the reason.
`--force-promote` promotes whatever the gate says; the record keeps the override and what the gate alone
decided.

Tolerance defaults (trainer/config.py): training is seeded and deterministic, so a retrain on unchanged
data reproduces the current metrics to the last digit and passes with Δ = 0 (measured: the second run
on the default platform). The allowance is for what does move them — the seed, a data window a few days
later. On the default platform (2,000 fans × 300 creators × 30 days, default config) seeds 7 and 11
gave two_tower+ranker NDCG@10 0.2623 vs 0.2607 and Recall@10 0.4120 vs 0.4156 on the same hold-out
(1,087 fans): differences of 0.002–0.004. The default allowance, max(0.01, 3 % of current) — 0.010 on
NDCG@10 and 0.012 on Recall@10 there — is three to six times that. One seed pair is a thin basis;
widen it if retrains on fresh data get rejected for noise. The gate reads the served ranking only: with
logQ off the two-tower alone lost 0.08 NDCG@10 while two_tower+ranker lost 0.004 (see
trainer.two_tower) — that model would pass.

Record: `models/<name>/<version>/promotion.json` for every model of the run — the decision and reason,
each check, both full metric sets, the versions compared, how the current creator vectors were made,
and what each ranker combines (`ranker_objectives`: its heads and default weights, or a single score —
a multi-objective ranker is gated on its combined score against a single-score one, same hold-out,
same candidate pool).
It is written before any pointer moves, so a promoted version always has its record. A rejected version
stays on disk (its models and its built, unswitched index) and nothing CURRENT moves. Promoted, the
creator index and the models switch together, index first, as before the gate existed. The online
store is refreshed by the pipeline before the gate whatever it decides: its rows and popular lists come
from the one feature builder, not from a model, so a kept current model serves the fresher features.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final, Protocol

import numpy as np
import numpy.typing as npt

from kindred.errors import FailedPrecondition, ModelMismatch
from kindred.features import CREATOR_TOWER_FEATURES, RANKER_FEATURES, USER_TOWER_FEATURES
from kindred.fileio import write_text_atomic
from kindred.models import (
    current_version,
    load_array,
    load_model,
    promote,
    read_manifest,
    version_dir,
    write_model,
)
from trainer.candidates import ServingPool
from trainer.config import PromotionConfig, TrainConfig
from trainer.datasets import Snapshot
from trainer.evaluate import evaluate_holdout

USER_TOWER: Final = "two_tower_user"
RANKER: Final = "ranker"
CREATOR_TOWER: Final = "two_tower_creator"
# The creator tower's ONNX input: the creator's row in its run's catalogue order (for the id embedding),
# then the creator tower features. One float input, so it loads through the same load_model as the rest.
CREATOR_TOWER_INPUTS: Final[tuple[str, ...]] = ("creator_index", *CREATOR_TOWER_FEATURES)
CREATOR_IDS_FILE: Final = "creator_ids.json"
PROMOTION_FILE: Final = "promotion.json"

Metrics = Mapping[str, Mapping[str, float]]


# ------------------------------------------------------------------------------------------------
# The decision (pure)
# ------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Check:
    metric: str
    new: float
    current: float
    delta: float  # new − current
    allowed_drop: float  # max(tolerance_abs, tolerance_rel × current)
    passed: bool


@dataclasses.dataclass(frozen=True)
class Decision:
    promoted: bool
    reason: str
    forced: bool = False
    gate_promoted: bool = True  # what the gate alone decided (differs from `promoted` only when forced)
    checks: tuple[Check, ...] = ()

    @property
    def outcome(self) -> str:
        return "promoted" if self.promoted else "rejected"


def check_metric(metric: str, new: float, current: float, cfg: PromotionConfig) -> Check:
    allowed = max(cfg.tolerance_abs, cfg.tolerance_rel * current)
    delta = new - current
    # The 1e-12 absorbs float noise when a drop equals the allowance exactly (a tie passes).
    passed = math.isfinite(delta) and delta >= -allowed - 1e-12
    return Check(metric, float(new), float(current), float(delta), float(allowed), bool(passed))


def _gated(metrics: Metrics, cfg: PromotionConfig, which: str) -> dict[str, float]:
    row = metrics.get(cfg.model)
    if row is None:
        raise ValueError(f"the {which} metrics have no {cfg.model!r} row (have: {', '.join(metrics)})")
    missing = [m for m in cfg.metrics if m not in row]
    if missing:
        raise ValueError(f"the {which} {cfg.model!r} metrics lack {', '.join(missing)}")
    return {m: float(row[m]) for m in cfg.metrics}


def decide(
    new: Metrics,
    current: Metrics | None,
    cfg: PromotionConfig,
    *,
    force: bool = False,
    no_current_reason: str = "no current model",
) -> Decision:
    """Promote `new` over `current` (None: there is nothing to compare with, see `no_current_reason`)?"""
    new_m = _gated(new, cfg, "new")
    checks: tuple[Check, ...] = ()
    if current is None:
        gate_ok, reason = True, no_current_reason
    else:
        cur_m = _gated(current, cfg, "current")
        checks = tuple(check_metric(m, new_m[m], cur_m[m], cfg) for m in cfg.metrics)
        failed = [c for c in checks if not c.passed]
        if failed:
            gate_ok = False
            reason = f"worse than the current {cfg.model} beyond tolerance: " + "; ".join(
                f"{c.metric} {c.new:.4f} vs {c.current:.4f} (Δ {c.delta:+.4f}, allowed -{c.allowed_drop:.4f})"
                for c in failed
            )
        else:
            gate_ok = True
            reason = f"not worse than the current {cfg.model} beyond tolerance: " + "; ".join(
                f"{c.metric} {c.new:.4f} vs {c.current:.4f} (Δ {c.delta:+.4f})" for c in checks
            )
    if force:
        alone = "promoted" if gate_ok else "rejected"
        return Decision(
            True, f"forced by --force-promote (the gate alone: {alone}, {reason})", True, gate_ok, checks
        )
    return Decision(gate_ok, reason, False, gate_ok, checks)


# ------------------------------------------------------------------------------------------------
# Scoring a model set on the hold-out
# ------------------------------------------------------------------------------------------------


class ModelSet(Protocol):
    """What evaluation needs from a two-tower + ranker pair."""

    def user_vectors(self, user_x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]: ...

    def creator_vectors(
        self, creator_ids: Sequence[str], creator_x: npt.NDArray[np.float32]
    ) -> npt.NDArray[np.float32]: ...

    def ranker_scores(self, x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]: ...


def score_on_holdout(
    models: ModelSet,
    test: Snapshot,
    creator_ids: Sequence[str],
    cfg: TrainConfig,
    pool: ServingPool | None = None,
) -> dict[str, dict[str, float]]:
    """The metrics of `models` on `test`, with exactly the arguments the pipeline's evaluate step uses
    (`pool`: the same serving pool the new models were evaluated with; each model set draws from it
    with its own two-tower scores)."""
    return evaluate_holdout(
        test,
        models.user_vectors(test.user_x),
        models.creator_vectors(creator_ids, test.creator_x),
        creator_ids,
        ks=cfg.eval.ks,
        n_two_tower=cfg.eval.candidates_two_tower,
        n_popular=cfg.eval.candidates_popular,
        ranker_score=models.ranker_scores,
        two_tower_score_for_popular=cfg.ranker.two_tower_score_for_popular,
        pool=pool,
        chunk_fans=cfg.eval.chunk_fans,
    )


class RegistryModels:
    """A promoted model set loaded from the registry with onnxruntime — the bytes the services run.

    Creator vectors: the version's creator tower on the given features when it was exported, else the
    creator embeddings stored for serving (see the module docstring: those may have seen the hold-out,
    and `caveat` says when). Creators the version never saw (added to the catalogue since) get a zero
    vector: cosine 0 with everyone, the middle of the two-tower order.
    """

    def __init__(self, models_dir: Path, user_version: str, ranker_version: str) -> None:
        self.user_version, self.ranker_version = user_version, ranker_version
        self.user = load_model(
            models_dir, USER_TOWER, expected_features=USER_TOWER_FEATURES, version=user_version
        )
        self.ranker = load_model(
            models_dir, RANKER, expected_features=RANKER_FEATURES, version=ranker_version
        )
        self.caveat: str | None = None
        self.unknown_creators = 0
        self._stored: npt.NDArray[np.float32] | None = None
        self._tower: Any = None
        try:
            self._tower = load_model(
                models_dir, CREATOR_TOWER, expected_features=CREATOR_TOWER_INPUTS, version=user_version
            )
            ids_dir = version_dir(models_dir, CREATOR_TOWER, user_version)
            self.creator_vectors_from = (
                f"{CREATOR_TOWER} {user_version} (onnxruntime) on creator features as of the hold-out start"
            )
        except FailedPrecondition:
            ids_dir = version_dir(models_dir, USER_TOWER, user_version)
            self._stored = load_array(models_dir, USER_TOWER, "creator_embeddings.npy", user_version)
            end = float(self.user.manifest.get("data_window", {}).get("end", 0.0))
            self._stored_as_of = end
            self.creator_vectors_from = (
                f"stored serving embeddings of {USER_TOWER} {user_version} (features as of {_iso(end)}); "
                f"that version has no {CREATOR_TOWER}"
            )
        try:
            self._ids: list[str] = list(json.loads((ids_dir / CREATOR_IDS_FILE).read_text(encoding="utf-8")))
        except (OSError, ValueError) as exc:
            raise ModelMismatch(f"{ids_dir / CREATOR_IDS_FILE} is unreadable: {exc}") from exc

    def user_vectors(self, user_x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        return self.user.run(user_x)

    def creator_vectors(
        self, creator_ids: Sequence[str], creator_x: npt.NDArray[np.float32]
    ) -> npt.NDArray[np.float32]:
        own = {c: i for i, c in enumerate(self._ids)}
        rows = [(j, own[c]) for j, c in enumerate(creator_ids) if c in own]
        self.unknown_creators = len(creator_ids) - len(rows)
        dim = int(self.user.manifest.get("embedding_dim", 0)) or None
        if self._tower is not None:
            x = np.array([[i, *creator_x[j]] for j, i in rows], dtype=np.float32).reshape(
                len(rows), len(CREATOR_TOWER_INPUTS)
            )
            got = self._tower.run(x) if rows else np.zeros((0, dim or 1), np.float32)
        else:
            assert self._stored is not None
            got = self._stored[[i for _, i in rows]].astype(np.float32)
        out = np.zeros((len(creator_ids), got.shape[1] if got.size else (dim or 1)), np.float32)
        out[[j for j, _ in rows]] = got
        return out

    def ranker_scores(self, x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        return self.ranker.run(x).reshape(-1)

    def check_stored_window(self, holdout_start: float) -> None:
        """Sets `caveat` when stored embeddings were computed from features past the hold-out's start."""
        if self._stored is not None and self._stored_as_of > holdout_start:
            self.caveat = (
                f"current creator vectors are stored serving embeddings computed from features as of "
                f"{_iso(self._stored_as_of)}, after this hold-out began ({_iso(holdout_start)}): they have "
                "seen part of the hold-out window: not quite the same inputs the new model was scored with"
            )


# ------------------------------------------------------------------------------------------------
# Creator tower export (torch; only the pipeline calls this)
# ------------------------------------------------------------------------------------------------


def export_creator_tower(
    creator_tower: Any,
    creator_ids: Sequence[str],
    creator_x: npt.NDArray[np.float32],
    *,
    models_dir: Path,
    version: str,
    data_window: Mapping[str, float],
    config: Mapping[str, Any],
    seed: int = 0,
) -> Path:
    """Writes `two_tower_creator/<version>/`: the creator tower as ONNX, (B, 1 + F_c) → (B, D).

    Only the gate of a later run loads it, to embed the catalogue as of that run's hold-out with this
    version's weights; the services use the index built from the stored embeddings.
    """
    import torch
    from torch import nn

    from trainer.export import build_manifest, check_parity, export_onnx

    class ByIndex(nn.Module):
        def __init__(self, tower: nn.Module) -> None:
            super().__init__()
            self.tower = tower

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            ids = torch.round(x[:, 0]).to(torch.int64)  # (B,) exact: float32 holds integers < 2**24
            out: torch.Tensor = self.tower(ids, x[:, 1:])
            return out  # (B, D)

    module = ByIndex(creator_tower).eval()
    real = np.concatenate(
        [np.arange(len(creator_ids), dtype=np.float32)[:, None], creator_x.astype(np.float32)], axis=1
    )
    # Parity on the real rows and on perturbed features with valid indices (noise on the index column
    # would only test out-of-range lookups).
    rng = np.random.default_rng(seed)
    noisy = real[rng.integers(0, len(real), 64)].copy()
    noisy[:, 1:] += rng.normal(scale=0.5, size=noisy[:, 1:].shape).astype(np.float32)
    onnx_bytes = export_onnx(module, real.shape[1], "creator_vector")
    diff = check_parity(module, onnx_bytes, np.concatenate([real, noisy]))
    manifest = build_manifest(
        name=CREATOR_TOWER,
        version=version,
        output_name="creator_vector",
        features=CREATOR_TOWER_INPUTS,
        data_window=data_window,
        metrics={},
        config=config,
        parity_max_abs_diff=diff,
        extra={
            "purpose": "promotion gate only (trainer.promotion); not served",
            "user_tower_version": version,
            "creator_ids_file": CREATOR_IDS_FILE,
        },
    )
    return write_model(
        models_dir,
        CREATOR_TOWER,
        version,
        onnx_bytes,
        manifest,
        extra_files={CREATOR_IDS_FILE: (json.dumps(list(creator_ids)) + "\n").encode()},
    )


# ------------------------------------------------------------------------------------------------
# The gate
# ------------------------------------------------------------------------------------------------


LoadCurrent = Callable[[Path, str, str], ModelSet]


def run_gate(
    *,
    models_dir: Path,
    model_names: Sequence[str],
    version: str,
    new_metrics: Metrics,
    test: Snapshot,
    creator_ids: Sequence[str],
    cfg: TrainConfig,
    force: bool,
    promote_index: Callable[[str], None],
    out: Callable[[str], None] = print,
    load_current: LoadCurrent = RegistryModels,
    pool: ServingPool | None = None,
) -> dict[str, Any]:
    """Evaluates CURRENT on `test`, decides, writes promotion.json next to each model of `version`, and
    (if promoted) switches the creator index and every model in `model_names` to `version`.

    Returns the record written to promotion.json.
    """
    models_dir = Path(models_dir)
    pcfg = cfg.promotion
    current_versions = {name: current_version(models_dir, name) for name in model_names}
    current_metrics: dict[str, dict[str, float]] | None = None
    current_info: dict[str, Any] = {"versions": current_versions}
    no_current = "no current model"
    if all(v is None for v in current_versions.values()):
        pass
    elif any(v is None for v in current_versions.values()):
        missing = [n for n, v in current_versions.items() if v is None]
        no_current = f"no complete current model ({', '.join(missing)} never promoted)"
    else:
        user_v = current_versions.get(USER_TOWER)
        ranker_v = current_versions.get(RANKER)
        if user_v is None or ranker_v is None:
            raise ValueError(
                f"the gate compares {USER_TOWER} + {RANKER}; model_names are {list(model_names)}"
            )
        try:
            started = time.perf_counter()
            models = load_current(models_dir, user_v, ranker_v)
            check_window = getattr(models, "check_stored_window", None)
            if callable(check_window):
                check_window(test.cut)
            current_metrics = score_on_holdout(models, test, creator_ids, cfg, pool)
            current_info.update(
                creator_vectors=getattr(models, "creator_vectors_from", None),
                creators_unknown_to_current=getattr(models, "unknown_creators", 0),
                caveat=getattr(models, "caveat", None),
                seconds=round(time.perf_counter() - started, 2),
            )
        except (ModelMismatch, FailedPrecondition) as exc:
            no_current = f"the current model cannot be evaluated ({exc})"
            current_info["error"] = str(exc)
        if current_metrics is not None:
            _check_same_holdout(new_metrics, current_metrics)
        current_info["manifest_metrics"] = _manifest_metrics(models_dir, user_v)
        current_info["ranker_objectives"] = _ranker_objectives(models_dir, ranker_v)

    decision = decide(new_metrics, current_metrics, pcfg, force=force, no_current_reason=no_current)
    record: dict[str, Any] = {
        "version": version,
        "decision": decision.outcome,
        "reason": decision.reason,
        "forced": decision.forced,
        "gate_decision": "promoted" if decision.gate_promoted else "rejected",
        "decided_at": _iso(time.time()),
        "gate": {
            "model": pcfg.model,
            "metrics": list(pcfg.metrics),
            "tolerance_abs": pcfg.tolerance_abs,
            "tolerance_rel": pcfg.tolerance_rel,
            "rule": "new >= current - max(tolerance_abs, tolerance_rel * current) for every gated metric",
        },
        "checks": [dataclasses.asdict(c) for c in decision.checks],
        "holdout": {
            "start": test.cut,
            "end": test.window_end,
            "start_iso": _iso(test.cut),
            "end_iso": _iso(test.window_end),
            **{k: v for k, v in new_metrics.get("holdout", {}).items()},
        },
        "new": {
            "versions": {name: version for name in model_names},
            "metrics": _plain(new_metrics),
            "ranker_objectives": _ranker_objectives(models_dir, version) if RANKER in model_names else None,
        },
        "current": {**current_info, "metrics": _plain(current_metrics) if current_metrics else None},
    }
    for name in model_names:
        _write_json_atomic(models_dir / name / version / PROMOTION_FILE, record)
    for line in format_record(record).splitlines():
        out(line)
    if decision.promoted:
        promote_index(version)
        for name in model_names:
            promote(models_dir, name, version)
        out(f"CURRENT → {version} for the creator index and {', '.join(model_names)}")
    else:
        kept = ", ".join(f"{n} {v}" for n, v in current_versions.items())
        out(f"CURRENT unchanged ({kept}); {version} stays on disk, unpromoted")
    return record


def _check_same_holdout(new: Metrics, current: Metrics) -> None:
    # Both sets were computed from one snapshot: what does not depend on the models must agree exactly.
    for key in ("holdout", "popularity"):
        if dict(new.get(key, {})) != dict(current.get(key, {})):
            raise RuntimeError(
                f"promotion gate: the {key!r} rows differ between the new and the current evaluation "
                f"({dict(new.get(key, {}))} vs {dict(current.get(key, {}))}); they were not scored on the "
                "same hold-out"
            )


def _manifest_metrics(models_dir: Path, user_version: str | None) -> dict[str, Any] | None:
    """The current version's own numbers (its own, earlier hold-out): context, not part of the decision."""
    if user_version is None:
        return None
    try:
        m = read_manifest(models_dir, USER_TOWER, user_version)
    except (ModelMismatch, FailedPrecondition):
        return None
    return {"data_window": m.get("data_window"), "metrics": m.get("metrics")}


def _ranker_objectives(models_dir: Path, version: str | None) -> dict[str, Any] | None:
    """What a ranker version combines: its heads and default weights, or a single "score"."""
    if version is None:
        return None
    try:
        m = read_manifest(models_dir, RANKER, version)
    except (ModelMismatch, FailedPrecondition):
        return None
    if not m.get("objectives"):
        return {"objectives": ["score"], "weights": {"score": 1.0}, "single_score": True}
    return {"objectives": list(m["objectives"]), "weights": dict(m.get("objective_weights") or {})}


def _plain(metrics: Metrics | None) -> dict[str, dict[str, float]] | None:
    if metrics is None:
        return None
    return {k: {m: float(v) for m, v in row.items()} for k, row in metrics.items()}


def _write_json_atomic(path: Path, data: Mapping[str, Any]) -> None:
    write_text_atomic(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def _iso(epoch_s: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch_s))


def format_record(record: Mapping[str, Any]) -> str:
    """The human view of a promotion record: gated checks, both metric sets side by side, the decision."""
    gate, cur, new = record["gate"], record["current"], record["new"]
    cur_metrics: Mapping[str, Mapping[str, float]] | None = cur.get("metrics")
    new_metrics: Mapping[str, Mapping[str, float]] = new["metrics"]
    cur_v = ", ".join(sorted({str(v) for v in (cur.get("versions") or {}).values() if v})) or "—"
    h = record["holdout"]
    lines = [
        f"promotion gate: {gate['model']} on this run's hold-out ({h.get('start_iso')} → {h.get('end_iso')}, "
        f"{int(h.get('fans', 0))} fans, {int(h.get('discoveries', 0))} discoveries); "
        f"tolerance max({gate['tolerance_abs']:g}, {gate['tolerance_rel']:g} × current)",
        f"  current: {cur_v}"
        + (f"  [creator vectors: {cur['creator_vectors']}]" if cur.get("creator_vectors") else ""),
        f"  new:     {record['version']}",
    ]
    heads = [
        f"{label} "
        + ", ".join(f"{n} {w:g}" for n, w in (side.get("ranker_objectives") or {}).get("weights", {}).items())
        for label, side in (("current", cur), ("new", new))
        if side.get("ranker_objectives")
    ]
    if heads:
        lines.append("  ranker objectives (default weights): " + "; ".join(heads))
    if cur_metrics is not None:
        cols = [c for c in _metric_columns(new_metrics) if any(c in r for r in cur_metrics.values())]
        width = max(len(m) for m in new_metrics if m != "holdout") + 10
        head = "  " + "model".ljust(width) + "".join(c.rjust(11) for c in cols)
        lines += [head, "  " + "-" * (len(head) - 2)]
        for model in (m for m in new_metrics if m != "holdout" and m in cur_metrics):
            for label, row in (("current", cur_metrics[model]), ("new", new_metrics[model])):
                lines.append(
                    "  "
                    + f"{model} ({label})".ljust(width)
                    + "".join(f"{row.get(c, float('nan')):11.4f}" for c in cols)
                )
            if model == gate["model"]:
                lines.append(
                    "  "
                    + "  Δ new − current".ljust(width)
                    + "".join(f"{new_metrics[model][c] - cur_metrics[model][c]:+11.4f}" for c in cols)
                )
        lines.append(
            "  gated: "
            + ", ".join(
                f"{c['metric']} Δ {c['delta']:+.4f} (allowed -{c['allowed_drop']:.4f}) "
                + ("ok" if c["passed"] else "FAIL")
                for c in record["checks"]
            )
        )
        if cur.get("caveat"):
            lines.append(f"  caveat: {cur['caveat']}")
    lines.append(f"  decision: {record['decision'].upper()} — {record['reason']}")
    return "\n".join(lines)


def _metric_columns(metrics: Mapping[str, Mapping[str, float]]) -> list[str]:
    names = {c for k, row in metrics.items() if k != "holdout" for c in row}
    ks = sorted({int(c.partition("@")[2]) for c in names if c.partition("@")[2].isdigit()})
    return [f"{m}@{k}" for k in ks for m in ("recall", "ndcg") if f"{m}@{k}" in names]


__all__ = [
    "CREATOR_TOWER",
    "PROMOTION_FILE",
    "Check",
    "Decision",
    "ModelSet",
    "RegistryModels",
    "check_metric",
    "decide",
    "export_creator_tower",
    "format_record",
    "run_gate",
    "score_on_holdout",
]
