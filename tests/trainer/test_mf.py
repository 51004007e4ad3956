"""kindred.mf: the fold-in is implicit's own ALS user step, and the model survives its files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from kindred.mf import MfModel, MfParams, ScoreLookup, top_rows
from trainer.mf import fit_mf, follow_matrix

CREATORS = [f"c{i:03d}" for i in range(60)]


def _following(seed: int = 0, fans: int = 200) -> dict[str, set[str]]:
    rng = np.random.default_rng(seed)
    return {
        f"f{u:03d}": {CREATORS[j] for j in rng.choice(len(CREATORS), size=rng.integers(1, 12), replace=False)}
        for u in range(fans)
    }


PARAMS = MfParams(factors=8, regularization=2.0, alpha=3.0, iterations=5)


def test_fold_in_is_implicits_least_squares_user_step() -> None:
    """The served fan vector must be what ALS would compute for that fan against the same creator
    factors (implicit's recalculate_user on the BM25-weighted row), or serving scores something else
    than what was trained."""
    from implicit.cpu.als import AlternatingLeastSquares
    from implicit.nearest_neighbours import bm25_weight

    following = _following()
    model = fit_mf(following, CREATORS, PARAMS, seed=0)
    weighted = bm25_weight(follow_matrix(following, CREATORS, 1000), K1=100, B=0.8).tocsr().astype(np.float32)
    with threadpool_limits(1, "blas"):
        reference = AlternatingLeastSquares(
            factors=8, regularization=2.0, alpha=3.0, iterations=1, random_state=0
        )
        reference.fit(weighted, show_progress=False)
    reference.item_factors = model.item_factors.copy()  # implicit recomputes YᵀY from these
    fans = sorted(following)
    for u in (0, 7, 123):
        expected = np.asarray(reference.recalculate_user(u, weighted[u])).ravel()
        got = model.fold_in(sorted(following[fans[u]]))
        assert got is not None
        np.testing.assert_allclose(got, expected, atol=1e-5)
        assert np.abs(got).max() > 0.05  # not trivially zero


def test_fans_with_similar_follows_score_alike_and_unknown_follows_give_no_vector() -> None:
    # Two audiences: fans of c000-c009 and fans of c030-c039; a new fan of c001+c002 must prefer the first.
    following = {f"a{u}": {CREATORS[(u + d) % 10] for d in range(4)} for u in range(40)}
    following |= {f"b{u}": {CREATORS[30 + (u + d) % 10] for d in range(4)} for u in range(40)}
    model = fit_mf(following, CREATORS, MfParams(factors=4, regularization=0.5, iterations=10), seed=1)
    vector = model.fold_in(["c001", "c002", "not-a-creator"])
    assert vector is not None
    scores = model.scores(vector)
    first, second = scores[:10].mean(), scores[30:40].mean()
    assert first > second + 0.1
    assert model.fold_in(["not-a-creator"]) is None and model.fold_in([]) is None
    lookup = ScoreLookup(model, vector)
    assert lookup.get("c003") == pytest.approx(float(scores[3])) and lookup.get("zzz", 0.0) == 0.0
    assert lookup["c007"] == pytest.approx(float(scores[7]))
    assert lookup.get_many(["c005", "zzz", "c001"], -1.0) == pytest.approx([scores[5], -1.0, scores[1]])
    with pytest.raises(KeyError):
        lookup["zzz"]


def test_files_round_trip(tmp_path: Path) -> None:
    model = fit_mf(_following(1), CREATORS, PARAMS, seed=0, version="v9")
    for name, data in model.files().items():
        (tmp_path / name).write_bytes(data)
    loaded = MfModel.load(tmp_path, {"version": "v9", "mf": model.manifest()})
    assert loaded is not None and loaded.creator_ids == model.creator_ids and loaded.params == PARAMS
    np.testing.assert_array_equal(loaded.item_factors, model.item_factors)
    follows = ["c004", "c010", "c011"]
    np.testing.assert_allclose(loaded.fold_in(follows), model.fold_in(follows))  # type: ignore[arg-type]
    assert MfModel.load(tmp_path, {"version": "v9"}) is None  # a version without the model


def test_top_rows_best_first_without_excluded() -> None:
    scores = np.array([0.1, 0.9, 0.5, 0.9, 0.3], dtype=np.float32)
    assert top_rows(scores, 3).tolist() == [1, 3, 2]  # ties by row
    assert top_rows(scores, 3, np.array([1, 2])).tolist() == [3, 4, 0]
    assert top_rows(scores, 10).tolist() == [1, 3, 2, 4, 0]


def test_bad_params_are_refused() -> None:
    with pytest.raises(ValueError, match="regularization"):
        MfParams(regularization=0.0)
    with pytest.raises(ValueError, match="factors"):
        MfParams(factors=0)


def test_the_fit_sees_only_the_follow_state_it_is_given() -> None:
    """Point in time: a creator nobody follows in the input gets no signal (factors shrink to ~0)."""
    following = {f: cs - {"c050"} for f, cs in _following(2).items()}
    model = fit_mf(following, CREATORS, PARAMS, seed=0)
    norms = np.linalg.norm(model.item_factors, axis=1)
    assert norms[CREATORS.index("c050")] < 1e-3 < np.median(norms)


def test_the_sampled_top_selection_is_exact() -> None:
    """`largest` may only skip work, never change the answer: same values as a full sort, on random,
    tied, mostly-zero and adversarially ordered vectors of every size it treats differently."""
    from kindred.mf import largest

    rng = np.random.default_rng(0)
    for trial in range(600):
        size = int(rng.choice([40, 1_000, 5_000, 100_000]))
        scores = rng.normal(size=size).astype(np.float32)
        if trial % 3 == 0:
            scores = np.round(scores, 1)  # many ties at the boundary
        if trial % 5 == 0:
            scores = np.sort(scores)  # the sample sees a sorted vector
        if trial % 4 == 1:
            scores[rng.random(size) < 0.9] = 0.0  # a block of exact zeros (never-followed creators)
        take = int(rng.integers(1, min(size, 400)))
        got = np.sort(scores[largest(scores, take)])[::-1]
        assert len(set(largest(scores, take).tolist())) == take
        np.testing.assert_array_equal(got, np.sort(scores)[::-1][:take])


def test_scores_skip_creators_nobody_followed_without_changing_any_score() -> None:
    following = {f: cs - {"c050", "c051"} for f, cs in _following(3).items()}
    model = fit_mf(following, CREATORS, PARAMS, seed=0)
    vector = model.fold_in(["c001", "c002", "c030"])
    assert vector is not None
    scores = model.scores(vector)
    np.testing.assert_allclose(scores, model.item_factors @ vector, rtol=1e-5, atol=1e-6)
    assert scores[50] == 0.0 and scores[51] == 0.0 and np.count_nonzero(scores) >= 50


def _skewed_model(creators: int, k: int, seed: int) -> MfModel:
    """Random factors with ALS-like spread of norms (popular creators long, the tail short) and a tenth
    of the creators never followed (all-zero rows)."""
    rng = np.random.default_rng(seed)
    factors = rng.normal(size=(creators, k)).astype(np.float32)
    factors *= rng.lognormal(sigma=1.0, size=(creators, 1)).astype(np.float32)
    factors[rng.random(creators) < 0.1] = 0.0
    ids = tuple(f"c{i:05d}" for i in range(creators))
    return MfModel(ids, factors, np.ones(creators, dtype=np.float32), 5.0, MfParams(factors=k))


@pytest.mark.parametrize("n", [1, 10, 212])
def test_bounded_top_is_exactly_the_full_rankings_top(n: int) -> None:
    """`top` skips creators by a bound; it must still return what ranking every creator returns."""
    model = _skewed_model(30_000, 16, seed=n)
    rng = np.random.default_rng(100 + n)
    for trial in range(20):
        vector = rng.normal(size=16).astype(np.float32) * rng.lognormal()
        exclude = rng.choice(30_000, size=trial * 3, replace=False)
        full = model.scores(vector)
        rows, scores = model.top(vector, n, exclude)
        assert rows.tolist() == top_rows(full, n, exclude).tolist()
        np.testing.assert_allclose(scores, full[rows], rtol=1e-5)


def test_bounded_top_ranks_the_never_followed_when_few_scores_are_positive() -> None:
    # Every active creator scores below 0 for this fan: the zero-vector creators (score 0) come first.
    factors = np.zeros((500, 4), dtype=np.float32)
    factors[:300, 0] = np.linspace(1.0, 2.0, 300)
    model = MfModel(tuple(f"c{i}" for i in range(500)), factors, np.ones(500, np.float32), 1.0, MfParams(4))
    vector = np.array([-1.0, 0.0, 0.0, 0.0], dtype=np.float32)
    rows, scores = model.top(vector, 5, [300])
    assert rows.tolist() == top_rows(model.scores(vector), 5, [300]).tolist()
    assert all(r >= 300 for r in rows.tolist()) and scores.tolist() == [0.0] * 5
    assert model.top(vector, 0)[0].size == 0
