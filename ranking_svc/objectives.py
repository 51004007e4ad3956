"""Multi-objective ranking at serving time: the ranker's heads, combined by configurable weights.

A multi-objective ranker (trainer.ranker) exports one ONNX output per objective head ("follow_logit",
"support_logit", "engage_logit") after its "score" output, and its manifest names them:

    "objectives": ["follow", "support", "engage"],
    "objective_outputs": {"follow": "follow_logit", ...},
    "objective_weights": {"follow": 1.0, "support": 1.0, "engage": 0.25}   # the trained default

The served score is `Σ w_h · logit_h`, with the manifest's weights unless the deployment overrides
some in `<data_dir>/config/ranking.json`, e.g. `{"objective_weights": {"support": 2.0}}` (objectives
not named keep their default; a weight of 0 switches a head off). Each head was trained with a listwise
softmax (trainer.ranker), so its logit is meaningful up to a per-list constant: the weighted sum is the
log of the product of the heads' in-list probabilities raised to their weights, and its order within a
request is what re-ranking consumes. The candidates also carry each head's in-list probability —
`scores["p_follow"]`, `scores["p_support"]`, `scores["p_engage"]`: the softmax of that head over the
request's candidates — so explanations and the console can show why an item ranks where it does.

A single-score model (exported before the heads existed) still loads and serves its "score"; naming
objective weights for it fails the start with kindred.errors.ModelMismatch naming the mismatch, as
does a weight for an objective the model does not have.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from kindred.errors import ModelMismatch

CONFIG_KEY = "objective_weights"
PROB_PREFIX = "p_"
FloatArray = npt.NDArray[np.float32]


class MultiOutputModel(Protocol):
    """A loaded ONNX model (kindred.models.OnnxModel) with its manifest and every output by name."""

    name: str
    version: str
    manifest: dict[str, Any]

    def run(self, x: npt.ArrayLike) -> FloatArray: ...

    def run_outputs(self, x: npt.ArrayLike) -> dict[str, FloatArray]: ...


@dataclasses.dataclass(frozen=True)
class Objectives:
    """The heads of one model: names, their ONNX outputs, the weights in use."""

    names: tuple[str, ...]
    outputs: tuple[str, ...]
    weights: tuple[float, ...]

    @classmethod
    def from_manifest(cls, manifest: Mapping[str, Any]) -> Objectives | None:
        """None for a single-score model (no "objectives" in its manifest)."""
        names = [str(n) for n in manifest.get("objectives") or ()]
        if not names:
            return None
        label = f"model {manifest.get('name')} {manifest.get('version')}"
        outputs_by_name = dict(manifest.get("objective_outputs") or {})
        defaults = dict(manifest.get("objective_weights") or {})
        graph_outputs = [str(o) for o in manifest.get("outputs") or ()]
        missing = [n for n in names if str(outputs_by_name.get(n, "")) not in graph_outputs]
        if missing:
            raise ModelMismatch(f"{label}: objectives {missing} have no output among {graph_outputs}")
        return cls(
            tuple(names),
            tuple(str(outputs_by_name[n]) for n in names),
            tuple(float(defaults.get(n, 0.0)) for n in names),
        )

    def with_overrides(self, overrides: Mapping[str, float], *, label: str) -> Objectives:
        unknown = sorted(set(overrides) - set(self.names))
        if unknown:
            raise ModelMismatch(
                f"{CONFIG_KEY} names {unknown}, but {label} has the objectives {list(self.names)}"
            )
        weights = tuple(float(overrides.get(n, w)) for n, w in zip(self.names, self.weights, strict=True))
        return dataclasses.replace(self, weights=weights)

    def as_dict(self) -> dict[str, float]:
        return dict(zip(self.names, self.weights, strict=True))


def check_weights(raw: Any, *, where: str) -> dict[str, float]:
    """`{"follow": 1.0, ...}` with finite, non-negative numbers; ValueError naming the bad entry."""
    if not isinstance(raw, Mapping):
        raise ValueError(f"{where} must be an object of objective → weight")
    out: dict[str, float] = {}
    for name, value in raw.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{where}.{name} must be a number, got {value!r}")
        if not math.isfinite(float(value)) or float(value) < 0:
            raise ValueError(f"{where}.{name} must be a finite weight ≥ 0, got {value!r}")
        out[str(name)] = float(value)
    return out  # all-zero weights are refused when the ranker is wrapped (unnamed heads keep defaults)


def load_weight_overrides(path: Path) -> dict[str, float]:
    """The `objective_weights` object of ranking.json ({} when the file or the key is absent)."""
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text())
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from exc
    if not isinstance(data, dict) or CONFIG_KEY not in data:
        return {}
    return check_weights(data[CONFIG_KEY], where=f"{path}: {CONFIG_KEY}")


class MultiObjectiveRanker:
    """A ScoringModel over a multi-head ONNX ranker: `run` gives the combined score, `run_objectives`
    also each head's in-list probability."""

    def __init__(self, model: MultiOutputModel, objectives: Objectives) -> None:
        if not any(objectives.weights):
            raise ModelMismatch(f"every objective weight of ranker {model.version} is 0: nothing to rank by")
        self.model = model
        self.objectives = objectives
        self.name = model.name
        self.version = model.version
        self._weights = np.asarray(objectives.weights, dtype=np.float64)

    def run(self, features: npt.ArrayLike) -> FloatArray:
        return self.run_objectives(features)[0]

    def run_objectives(self, features: npt.ArrayLike) -> tuple[FloatArray, dict[str, FloatArray]]:
        outs = self.model.run_outputs(features)
        heads = np.stack([np.asarray(outs[o], np.float64).reshape(-1) for o in self.objectives.outputs], 1)
        combined = (heads @ self._weights).astype(np.float32)
        return combined, {
            PROB_PREFIX + name: in_list_softmax(heads[:, h]).astype(np.float32)
            for h, name in enumerate(self.objectives.names)
        }


def in_list_softmax(logits: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    if logits.size == 0:
        return logits
    z = np.exp(logits - logits.max())
    return z / z.sum()  # type: ignore[no-any-return]


def wrap_ranker(model: MultiOutputModel, overrides: Mapping[str, float] | None = None) -> Any:
    """The model to serve: a MultiObjectiveRanker for a multi-head model (weights: manifest defaults
    with `overrides`), the model itself for a single-score one (ModelMismatch if `overrides` names any
    objective: it has none)."""
    label = f"ranker {model.version}"
    objectives = Objectives.from_manifest(model.manifest)
    if objectives is None:
        if overrides:
            raise ModelMismatch(
                f"{CONFIG_KEY} names {sorted(overrides)}, but {label} is a single-score model "
                f"(outputs {model.manifest.get('outputs')}); retrain it or drop {CONFIG_KEY}"
            )
        return model
    return MultiObjectiveRanker(model, objectives.with_overrides(overrides or {}, label=label))


def score_objectives(model: Any, features: npt.ArrayLike) -> tuple[FloatArray, dict[str, FloatArray]]:
    """(scores, per-objective in-list probabilities) from any ScoringModel; single-score: ({})."""
    run_objectives = getattr(model, "run_objectives", None)
    if callable(run_objectives):
        scores, per_objective = run_objectives(features)
        return np.asarray(scores, np.float32), dict(per_objective)
    return np.asarray(model.run(features), np.float32), {}


__all__ = [
    "CONFIG_KEY",
    "MultiObjectiveRanker",
    "Objectives",
    "check_weights",
    "load_weight_overrides",
    "score_objectives",
    "wrap_ranker",
]
