"""Which fans each two-tower fit trains on: the ranker's lists are only ever scored by a tower that never
saw their fan (trainer.pipeline.fit_two_towers), with a held-out share or with cross-fitting."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from trainer.config import TrainConfig, TwoTowerConfig, config_from_dict
from trainer.pipeline import FanFilter, fan_fold, fit_two_towers, in_holdout
from trainer.ranker import RankerData

FANS = [f"f{i:04d}" for i in range(600)]


@dataclass(frozen=True)
class RecordedFit:
    name: str
    trained_on: frozenset[str]
    validated_on: frozenset[str]


def record(train_on: FanFilter, validate_on: FanFilter, name: str) -> RecordedFit:
    return RecordedFit(name, frozenset(filter(train_on, FANS)), frozenset(filter(validate_on, FANS)))


def with_folds(folds: int, seed: int = 7) -> TrainConfig:
    return TrainConfig(seed=seed, two_tower=TwoTowerConfig(cross_fit_folds=folds))


@pytest.mark.parametrize("folds", [2, 3, 5])
def test_cross_fitting_scores_every_fan_out_of_fold(folds: int) -> None:
    served, ranker_fits = fit_two_towers(with_folds(folds), record)
    assert len(ranker_fits) == folds
    scored_by: dict[str, list[RecordedFit]] = {}
    for fans, fit in ranker_fits:
        listed = {f for f in FANS if fans(f)}
        assert listed, "every fold holds fans"
        assert not listed & fit.trained_on, f"{fit.name} trained on fans whose lists it scores"
        assert fit.trained_on | listed == set(FANS), f"{fit.name} skips fans outside its fold"
        assert fit.validated_on == listed
        for f in listed:
            scored_by.setdefault(f, []).append(fit)
    assert sorted(scored_by) == FANS and all(len(v) == 1 for v in scored_by.values())
    assert served.trained_on == set(FANS) and not served.validated_on
    assert len({fit.trained_on for _, fit in ranker_fits} | {served.trained_on}) == folds + 1


@pytest.mark.parametrize("folds", [0, 1])
def test_without_cross_fitting_one_tower_holds_out_the_ranker_share(folds: int) -> None:
    cfg = with_folds(folds)
    served, ranker_fits = fit_two_towers(cfg, record)
    [(fans, fit)] = ranker_fits
    held = {f for f in FANS if in_holdout(f, cfg.two_tower.ranker_holdout_fans, cfg.seed)}
    assert fit is served  # the tower that scores the ranker's lists is the one served
    assert {f for f in FANS if fans(f)} == held == served.validated_on
    assert served.trained_on == set(FANS) - held
    assert 0.15 < len(held) / len(FANS) < 0.35  # the 0.25 share, give or take the hash


def test_fan_folds_are_stable_balanced_and_seeded() -> None:
    folds = [fan_fold(f, 3, 7) for f in FANS]
    assert folds == [fan_fold(f, 3, 7) for f in FANS]
    counts = np.bincount(folds, minlength=3)
    assert counts.min() > 150, counts
    assert folds != [fan_fold(f, 3, 8) for f in FANS]


def test_cross_fit_folds_must_not_be_negative() -> None:
    with pytest.raises(ValueError, match="cross_fit_folds"):
        config_from_dict({"two_tower": {"cross_fit_folds": -1}})


def test_ranker_data_concatenates_lists_in_order() -> None:
    def part(value: float, n: int) -> RankerData:
        return RankerData(
            np.full((n, 4, 3), value, np.float32),
            np.ones((n, 4), bool),
            np.full((n, 4, 2), value, np.float32),
            np.full((n, 4), value, np.float32),
        )

    both = RankerData.concat([part(1.0, 2), part(2.0, 3)])
    assert len(both) == 5
    assert both.x[:, 0, 0].tolist() == [1, 1, 2, 2, 2]
    assert both.discovery is not None and both.discovery[:, 0].tolist() == [1, 1, 2, 2, 2]
    assert both.y.shape == (5, 4, 2) and both.mask.all()
    with pytest.raises(ValueError):
        RankerData.concat([])
