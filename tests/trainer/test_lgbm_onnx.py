"""trainer.lgbm_onnx: a LightGBM booster written as an ONNX tree ensemble scores exactly as LightGBM."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from trainer.lgbm_onnx import INPUT_NAME, OUTPUT_NAME, booster_to_onnx


def _run(model: bytes, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    (out,) = session.run([OUTPUT_NAME], {INPUT_NAME: x.astype(np.float32)})
    return np.asarray(out)


def _booster(objective: str) -> tuple[object, np.ndarray, np.ndarray]:
    import lightgbm as lgb

    rng = np.random.default_rng(0)
    x = rng.normal(size=(600, 5)).astype(np.float32)
    y = (x[:, 0] + np.sin(3 * x[:, 1]) * x[:, 2] > 0.3).astype(np.int32)
    params = {"objective": objective, "num_leaves": 15, "min_data_in_leaf": 5, "verbose": -1}
    params.update({"num_threads": 1, "deterministic": True, "force_row_wise": True})
    group = [30] * 20 if objective == "lambdarank" else None
    booster = lgb.train(params, lgb.Dataset(x.astype(np.float64), y, group=group), num_boost_round=40)
    test = rng.normal(size=(400, 5)).astype(np.float32)
    return booster, x, test


@pytest.mark.parametrize("objective", ["lambdarank", "binary"])
def test_onnx_graph_matches_lightgbm_raw_scores(objective: str) -> None:
    booster, train, test = _booster(objective)
    model = booster_to_onnx(booster, 5)
    # Training rows sit exactly on split thresholds' neighbourhoods: the float32 threshold rounding matters.
    for x in (train, test):
        want = booster.predict(x.astype(np.float64), raw_score=True)  # type: ignore[attr-defined]
        np.testing.assert_allclose(_run(model, x), want, atol=1e-5)
    assert np.ptp(_run(model, test)) > 0.1  # not a constant model: the comparison means something


def test_linear_base_is_added() -> None:
    booster, _, test = _booster("binary")
    w = np.array([0.5, -1.0, 0.0, 2.0, 0.25], dtype=np.float32)
    model = booster_to_onnx(booster, 5, base_weights=w)
    want = booster.predict(test.astype(np.float64), raw_score=True) + test @ w  # type: ignore[attr-defined]
    np.testing.assert_allclose(_run(model, test), want, atol=1e-5)


def test_bench_path_re_exports_the_same_writer() -> None:
    from bench.recsys import lgbm_onnx as bench_copy

    assert bench_copy.booster_to_onnx is booster_to_onnx
