"""p(open | send now) and p(disable | send) for the learned notification policy, trained on outcome events.

Input: a notification outcome log — DELIVERED / OPENED / DISABLED events (with the delivered item's
creator, trigger and the fan's zone, as the delivery system reports them) plus the fans' memberships —
ideally collected under a randomised logging policy, so sends at every hour and every volume are seen.
The log is replayed in time order through notify_svc.features (the serving code): each delivery's
feature row is computed from the events strictly before it, then the delivery is recorded. Labels:
opened (an OPENED event for that notification), disabled (a DISABLED event attributed to it).

Model: standardise → MLP (64, 32, ReLU) → two logits → sigmoid, one ONNX graph whose single output
`outcome_probs` (B, 2) is [p(open), p(disable)]: serving scores every candidate and instant with ONE
call. Plain binary cross-entropy per head, no re-weighting — the policy multiplies these by values and
costs, so they must stay calibrated. Evaluated on a time hold-out (the last `holdout_fraction` of
deliveries): AUC, log loss against the base rate, mean predicted vs observed rate. Exported with the
parity check of trainer/export.py, written with kindred.models (manifest + sha256) and promoted.

    python -m trainer.notify_models --log var/notify_sim/log.jsonl --models-dir var/notify_sim/models
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from kindred.models import promote, write_model
from notify_svc import timezones as tz
from notify_svc.domain import Candidate, Channel, FanState, Outcome, OutcomeEvent, Trigger
from notify_svc.features import (
    N_FEATURES,
    NOTIFY_FEATURE_VERSION,
    NOTIFY_FEATURES,
    EngagementHistory,
    Relationship,
    feature_matrix,
)
from notify_svc.learned import MODEL_NAME, OUTPUT_NAME
from trainer.export import build_manifest, check_parity, export_onnx, parity_inputs
from trainer.notify_log import LogEvent, MembershipRow, read_log
from trainer.two_tower import Standardize, feature_stats

_WEEK = timedelta(days=7)
_KINDS = {"delivered": 0, "opened": 1, "disabled": 2}


@dataclass(frozen=True)
class NotifyTrainConfig:
    hidden: tuple[int, int] = (64, 32)
    epochs: int = 6
    batch_size: int = 512
    lr: float = 3e-3
    weight_decay: float = 1e-5
    holdout_fraction: float = 0.2
    seed: int = 0


@dataclass
class Dataset:
    x: npt.NDArray[np.float32]  # (N, N_FEATURES)
    opened: npt.NDArray[np.float32]
    disabled: npt.NDArray[np.float32]
    at: npt.NDArray[np.float64]  # epoch seconds of each delivery


def replay(events: Iterable[LogEvent], memberships: Iterable[MembershipRow]) -> Dataset:
    """Point-in-time feature rows and labels for every non-transactional delivery in the log."""
    history = EngagementHistory()
    for m in memberships:
        history.set_relationship(m.fan_id, m.creator_id, Relationship(True, m.tier))
    ordered = sorted(events, key=lambda e: (e.at, _KINDS[e.kind]))
    sends: dict[str, list[datetime]] = {}
    rows: list[npt.NDArray[np.float32]] = []
    ids: list[str] = []
    times: list[float] = []
    opened: set[str] = set()
    disabled: set[str] = set()
    for e in ordered:
        if e.kind == "opened":
            opened.add(e.notification_id)
            history.record_outcome(OutcomeEvent(e.notification_id, e.fan_id, Outcome.OPENED, e.at))
        elif e.kind == "disabled":
            disabled.add(e.notification_id)
        elif e.kind == "delivered":
            trigger = Trigger(e.trigger)
            if trigger in (Trigger.PAYMENT_FAILED, Trigger.MEMBERSHIP_CHANGED):
                continue
            zone = tz.resolve_zone(e.time_zone, "time_zone")
            fan_sends = sends.setdefault(e.fan_id, [])
            while fan_sends and fan_sends[0] <= e.at - _WEEK:
                fan_sends.pop(0)
            cand = Candidate(
                e.notification_id, e.fan_id, e.creator_id, "", trigger, Channel.PUSH, e.at, e.time_zone
            )
            snap = history.snapshot(e.fan_id, e.creator_id, e.at)
            rows.append(
                feature_matrix([cand], [FanState(sends=tuple(fan_sends))], [snap], [zone], [[e.at]])[0, 0]
            )
            ids.append(e.notification_id)
            times.append(e.at.timestamp())
            history.record_delivery(e.notification_id, e.fan_id, e.creator_id, zone, e.at)
            fan_sends.append(e.at)
        else:
            raise ValueError(f"unknown event kind {e.kind!r}")
    x = np.stack(rows).astype(np.float32) if rows else np.zeros((0, N_FEATURES), dtype=np.float32)
    return Dataset(
        x=x,
        opened=np.array([i in opened for i in ids], dtype=np.float32),
        disabled=np.array([i in disabled for i in ids], dtype=np.float32),
        at=np.array(times, dtype=np.float64),
    )


class OutcomeNet(nn.Module):
    """features (B, F) → probabilities (B, 2): [p(open), p(disable)]."""

    def __init__(
        self, mean: npt.NDArray[np.float32], std: npt.NDArray[np.float32], hidden: Sequence[int]
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = [Standardize(mean, std)]
        width = len(mean)
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        layers.append(nn.Linear(width, 2))
        self.body = nn.Sequential(*layers)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.body(x)
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.logits(x))


def fit(data: Dataset, config: NotifyTrainConfig) -> OutcomeNet:
    torch.manual_seed(config.seed)
    mean, std = feature_stats(data.x)
    model = OutcomeNet(mean, std, config.hidden)
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    x = torch.from_numpy(data.x)
    y = torch.from_numpy(np.stack([data.opened, data.disabled], axis=1))
    gen = torch.Generator().manual_seed(config.seed)
    loss_fn = nn.BCEWithLogitsLoss(reduction="sum")
    model.train()
    for _ in range(config.epochs):
        order = torch.randperm(len(x), generator=gen)
        for start in range(0, len(x), config.batch_size):
            batch = order[start : start + config.batch_size]
            logits = model.logits(x[batch])
            # Summed per head, then per row: each head is a proper log likelihood.
            loss = loss_fn(logits, y[batch]) / len(batch)
            opt.zero_grad()
            loss.backward()  # type: ignore[no-untyped-call]
            opt.step()
    return model.eval()


def auc(scores: npt.NDArray[np.float64], labels: npt.NDArray[np.float32]) -> float:
    """ROC AUC by the rank-sum formula (ties averaged); NaN without both classes."""
    pos = labels > 0.5
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores))
    sorted_scores = scores[order]
    i = 0
    while i < len(scores):
        j = i
        while j + 1 < len(scores) and sorted_scores[j + 1] == sorted_scores[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def log_loss(p: npt.NDArray[np.float64], y: npt.NDArray[np.float32]) -> float:
    q = np.clip(p, 1e-7, 1 - 1e-7)
    return float(-(y * np.log(q) + (1 - y) * np.log(1 - q)).mean())


def evaluate(model: OutcomeNet, data: Dataset, base: Dataset) -> dict[str, float]:
    """Hold-out metrics per head; `base` (the training split) gives the constant-rate baseline."""
    with torch.no_grad():
        probs = model(torch.from_numpy(data.x)).numpy().astype(np.float64)
    out: dict[str, float] = {"rows": float(len(data.x))}
    for col, name, labels, base_labels in (
        (0, "open", data.opened, base.opened),
        (1, "disable", data.disabled, base.disabled),
    ):
        rate = float(base_labels.mean()) if len(base_labels) else 0.0
        out[f"{name}_auc"] = auc(probs[:, col], labels)
        out[f"{name}_log_loss"] = log_loss(probs[:, col], labels)
        out[f"{name}_log_loss_base_rate"] = log_loss(np.full(len(labels), rate), labels)
        out[f"{name}_mean_predicted"] = float(probs[:, col].mean())
        out[f"{name}_observed"] = float(labels.mean())
    return out


@dataclass
class TrainResult:
    version: str
    directory: Path
    metrics: dict[str, float]
    rows: int


def train_notify_models(
    events: Iterable[LogEvent],
    memberships: Iterable[MembershipRow],
    models_dir: Path,
    *,
    version: str | None = None,
    config: NotifyTrainConfig | None = None,
) -> TrainResult:
    """Replays the log, fits on all but the last hold-out fraction, evaluates, exports and promotes."""
    cfg = config or NotifyTrainConfig()
    data = replay(events, memberships)
    if len(data.x) < 100 or data.opened.sum() < 5:
        raise ValueError(
            f"too little data to train: {len(data.x)} deliveries, {int(data.opened.sum())} opens"
        )
    order = np.argsort(data.at, kind="stable")
    cut = int(len(order) * (1 - cfg.holdout_fraction))
    train, hold = _take(data, order[:cut]), _take(data, order[cut:])
    model = fit(train, cfg)
    metrics = evaluate(model, hold, train)
    onnx_bytes = export_onnx(model, N_FEATURES, OUTPUT_NAME)
    parity = check_parity(model, onnx_bytes, parity_inputs(hold.x if len(hold.x) else train.x))
    version = version or time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    manifest = build_manifest(
        name=MODEL_NAME,
        version=version,
        output_name=OUTPUT_NAME,
        features=NOTIFY_FEATURES,
        data_window={"start": float(data.at.min()), "end": float(data.at.max())},
        metrics=metrics,
        config={**asdict(cfg), "hidden": list(cfg.hidden)},
        parity_max_abs_diff=parity,
        extra={"notify_feature_version": NOTIFY_FEATURE_VERSION, "outputs_meaning": ["p_open", "p_disable"]},
    )
    directory = write_model(models_dir, MODEL_NAME, version, onnx_bytes, manifest)
    promote(models_dir, MODEL_NAME, version)
    return TrainResult(version, directory, metrics, len(data.x))


def _take(data: Dataset, idx: npt.NDArray[np.int64]) -> Dataset:
    return Dataset(data.x[idx], data.opened[idx], data.disabled[idx], data.at[idx])


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--log", type=Path, required=True)
    parser.add_argument("--models-dir", type=Path, required=True)
    parser.add_argument("--version", default=None)
    parser.add_argument("--epochs", type=int, default=NotifyTrainConfig.epochs)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    events, memberships = read_log(args.log)
    result = train_notify_models(
        events,
        memberships,
        args.models_dir,
        version=args.version,
        config=NotifyTrainConfig(epochs=args.epochs),
    )
    shown = {k: (round(v, 4) if not math.isnan(v) else None) for k, v in result.metrics.items()}
    print(json.dumps({"version": result.version, "rows": result.rows, "metrics": shown}, indent=2))


if __name__ == "__main__":
    main()
