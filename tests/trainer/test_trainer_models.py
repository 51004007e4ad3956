"""Model code without Ray: losses go down, the logQ correction does what it claims, ONNX matches torch."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from trainer import ranker as rk  # noqa: E402
from trainer import two_tower as tt  # noqa: E402
from trainer.config import RankerConfig, TwoTowerConfig  # noqa: E402
from trainer.export import ExportError, check_parity, export_onnx, parity_inputs  # noqa: E402

SMALL_TT = TwoTowerConfig(
    dim=8,
    hidden=32,
    creator_id_dim=4,
    creator_hidden=8,
    dropout=0.0,
    epochs=8,
    batch_size=64,
    lr=1e-2,
    weight_decay=0.0,
)
SMALL_RK = RankerConfig(hidden=(16,), dropout=0.0, epochs=10, batch_groups=16, lr=1e-2)


def clustered_two_tower_data(
    seed: int = 0, users: int = 300, creators: int = 24, clusters: int = 4
) -> tt.TwoTowerData:
    """Users with a one-hot taste for a creator cluster, plus noise features; positives from the cluster."""
    rng = np.random.default_rng(seed)
    taste = rng.integers(0, clusters, users)
    user_x = np.concatenate([np.eye(clusters)[taste], rng.normal(size=(users, 6))], axis=1).astype(np.float32)
    creator_x = np.concatenate(
        [np.eye(clusters)[np.arange(creators) % clusters], rng.normal(size=(creators, 3))], axis=1
    ).astype(np.float32)[None]
    ex_user = np.repeat(np.arange(users), 3)
    ex_creator = np.array(
        [rng.choice(np.flatnonzero(np.arange(creators) % clusters == taste[u])) for u in ex_user]
    )
    return tt.TwoTowerData(
        user_x,
        creator_x,
        ex_user.astype(np.int64),
        np.zeros(len(ex_user), np.int64),
        ex_creator.astype(np.int64),
    )


def test_two_tower_short_run_lowers_the_loss() -> None:
    data = clustered_two_tower_data()
    torch.manual_seed(0)
    stats = dict(zip(("user_mean", "user_std"), tt.feature_stats(data.user_x), strict=True))
    stats.update(zip(("creator_mean", "creator_std"), tt.feature_stats(data.creator_x), strict=True))
    untrained = tt.TwoTower(data.dims, SMALL_TT, stats).eval()
    log_q = torch.from_numpy(tt.logq(data.ex_creator, data.dims["creators"]))
    before = tt.evaluate_loss(untrained, data, SMALL_TT, log_q)
    result = tt.train_two_tower(data, SMALL_TT, seed=0, log=lambda _: None)
    after = tt.evaluate_loss(tt.build_model(result, SMALL_TT), data, SMALL_TT, log_q)
    assert after < 0.8 * before
    assert result.history[-1]["loss"] < result.history[0]["loss"]


def test_two_tower_learns_the_clusters() -> None:
    data = clustered_two_tower_data()
    model = tt.build_model(tt.train_two_tower(data, SMALL_TT, seed=0, log=lambda _: None), SMALL_TT)
    u = tt.user_vectors(model, data.user_x)
    v = tt.creator_vectors(model, data.creator_x[0])
    assert np.allclose(np.linalg.norm(u, axis=1), 1.0, atol=1e-5)  # cosine space
    assert np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    taste = data.user_x[:, :4].argmax(1)
    top = (u @ v.T).argmax(1)
    assert np.mean(top % 4 == taste) > 0.9  # each user's best creator is from its own cluster


def test_logq_is_the_log_share_of_positives() -> None:
    q = np.exp(tt.logq(np.array([0, 0, 0, 1], dtype=np.int64), 3))
    assert math.isclose(float(q.sum()), 1.0, rel_tol=1e-6)
    assert q[0] > q[1] > q[2] > 0  # never-seen creators still get a finite value


def test_in_batch_loss_never_uses_a_creator_as_its_own_negative() -> None:
    data = clustered_two_tower_data()
    stats = dict(zip(("user_mean", "user_std"), tt.feature_stats(data.user_x), strict=True))
    stats.update(zip(("creator_mean", "creator_std"), tt.feature_stats(data.creator_x), strict=True))
    model = tt.TwoTower(data.dims, SMALL_TT, stats).eval()
    users = torch.from_numpy(data.user_x[:3])
    cx = torch.from_numpy(data.creator_x[0, [5, 5, 7]])
    with torch.no_grad():
        dup = tt.in_batch_loss(model, users, torch.tensor([5, 5, 7]), cx, None, 0.1)
        # Rows 0 and 1 hold the same creator: each must see only itself and creator 7.
        u = model.user(users)
        v = model.creator(torch.tensor([5, 5, 7]), cx)
        logits = u @ v.T / 0.1
        manual = torch.stack(
            [
                -torch.log_softmax(logits[0, [0, 2]], 0)[0],
                -torch.log_softmax(logits[1, [1, 2]], 0)[0],
                -torch.log_softmax(logits[2], 0)[2],
            ]
        ).mean()
    assert torch.isclose(dup, manual, atol=1e-5)


def test_user_tower_onnx_matches_torch() -> None:
    data = clustered_two_tower_data()
    model = tt.build_model(tt.train_two_tower(data, SMALL_TT, seed=0, log=lambda _: None), SMALL_TT)
    onnx_bytes = export_onnx(model.user, data.user_x.shape[1], "user_vector")
    worst = check_parity(model.user, onnx_bytes, parity_inputs(data.user_x), atol=1e-4)
    assert worst <= 1e-4
    # And the check can fail: a model that differs from the exported one is caught.
    with torch.no_grad():
        model.user.net[0].bias.add_(0.5)  # type: ignore[operator]
    with pytest.raises(ExportError):
        check_parity(model.user, onnx_bytes, parity_inputs(data.user_x), atol=1e-4)


def ranker_data(seed: int = 0, groups: int = 120, size: int = 12, features: int = 6) -> rk.RankerData:
    """Lists with one label per objective of SMALL_RK (follow, support, engage): feature 0 (plus noise)
    decides the follow, feature 1 the support — present in every other list only, as memberships are
    rarer — and the engagement goes to the three best by feature 0 + feature 1. Padding at each list's end.
    """
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(groups, size, features)).astype(np.float32)
    mask = np.ones((groups, size), bool)
    mask[:, -2:] = False
    y = np.zeros((groups, size, 3), np.float32)
    rows = np.arange(groups)

    def best(signal: np.ndarray) -> np.ndarray:
        return np.argsort(-np.where(mask, signal + 0.3 * rng.normal(size=(groups, size)), -np.inf), axis=1)

    y[rows, best(x[..., 0])[:, 0], 0] = 1.0
    support = best(x[..., 1])[:, 0]
    y[rows[::2], support[::2], 1] = 1.0
    for r in range(3):
        y[rows, best(x[..., 0] + x[..., 1])[:, r], 2] = 1.0
    return rk.RankerData(x, mask, y)


def test_ranker_short_run_lowers_the_loss_and_each_head_learns_its_own_signal() -> None:
    data = ranker_data()
    assert tuple(SMALL_RK.objectives) == ("follow", "support", "engage")
    result = rk.train_ranker(data, SMALL_RK, seed=0, log=lambda _: None)
    assert result.history[-1]["loss"] < 0.7 * result.history[0]["loss"]
    assert result.objectives == ("follow", "support", "engage")
    model = rk.build_model(result, SMALL_RK)
    grid = np.linspace(-2, 2, 5)
    along0 = np.zeros((5, 6), np.float32)
    along0[:, 0] = grid
    along1 = np.zeros((5, 6), np.float32)
    along1[:, 1] = grid
    heads0, heads1 = rk.score_objectives(model, along0), rk.score_objectives(model, along1)
    assert np.all(np.diff(heads0[:, 0]) > 0)  # follow rises with feature 0 ...
    assert np.all(np.diff(heads1[:, 1]) > 0)  # ... support with feature 1 ...
    assert np.ptp(heads0[:, 0]) > 2 * np.ptp(heads1[:, 0])  # ... and follow cares far less about 1
    # The combined score is the heads weighted by the configured defaults.
    weights = np.array([SMALL_RK.objective_weights[n] for n in SMALL_RK.objectives], np.float32)
    np.testing.assert_allclose(rk.score(model, along0), heads0 @ weights, rtol=1e-5, atol=1e-5)


def test_the_default_combination_is_chosen_for_the_discovery_target_on_validation_lists() -> None:
    data = ranker_data()
    model = rk.build_model(rk.train_ranker(data, SMALL_RK, seed=0, log=lambda _: None), SMALL_RK)
    val = ranker_data(seed=1)
    # Discovery = the follow: the other heads only add noise, so the chosen weights leave them out.
    val.discovery = val.y[..., 0].copy()
    chosen, table = rk.select_weights(model, val, (0.0, 1.0))
    assert chosen == (1.0, 0.0, 0.0) and len(table) == 4
    assert max(r["ndcg@10"] for r in table) == next(r["ndcg@10"] for r in table if r["weights"] == [1, 0, 0])
    # Discovery = the support: the support head must get weight.
    val.discovery = val.y[..., 1].copy()
    chosen, _ = rk.select_weights(model, val, (0.0, 1.0))
    assert chosen[1] == 1.0


def test_a_rebuilt_ranker_scores_with_the_weights_chosen_after_training() -> None:
    """The trained state dict holds the config's default weights; the combination chosen later (or with
    untrained heads zeroed) must be what the rebuilt model's score - the exported "score" output and the
    trainer's hold-out evaluation - uses, as ranking_svc does with the manifest's weights."""
    result = rk.train_ranker(ranker_data(), SMALL_RK, seed=0, log=lambda _: None)
    chosen = (1.0, 0.0, 0.7)
    assert chosen != result.weights
    model = rk.build_model(dataclasses.replace(result, weights=chosen), SMALL_RK)
    x = ranker_data(seed=1).x[:4]
    expected = rk.score_objectives(model, x) @ np.asarray(chosen, np.float32)
    np.testing.assert_allclose(rk.score(model, x), expected, rtol=1e-5, atol=1e-5)


def test_a_head_without_positives_is_untrained_and_never_weighed() -> None:
    data = ranker_data()
    data.y[..., 1] = 0.0  # no list has a support positive: that head never gets a gradient
    assert rk.trained_heads(data) == (True, False, True)
    model = rk.build_model(rk.train_ranker(data, SMALL_RK, seed=0, log=lambda _: None), SMALL_RK)
    val = ranker_data(seed=1)
    val.discovery = val.y[..., 1].copy()  # validation rewards exactly what the untrained head "predicts"
    chosen, table = rk.select_weights(model, val, (0.0, 1.0), trained=rk.trained_heads(data))
    assert chosen[1] == 0.0 and len(table) == 2  # only the engage head's weight is searched
    assert all(row["weights"][1] == 0.0 for row in table)
    assert rk.without_untrained((1.0, 0.1, 0.5), (True, False, True)) == (1.0, 0.0, 0.5)
    with pytest.raises(ValueError, match="heads"):
        rk.select_weights(model, val, (0.0, 1.0), trained=(True, False))


def test_list_ndcg_by_hand() -> None:
    scores = np.array([[3.0, 2.0, 1.0, 9.0]])
    mask = np.array([[True, True, True, False]])
    rel = np.array([[0.0, 1.0, 0.0, 1.0]])  # the padded relevant candidate does not count
    assert rk.list_ndcg(scores, mask, rel, k=2) == pytest.approx((1 / math.log2(3)) / 1.0)


def test_listwise_loss_ignores_padding() -> None:
    scores = torch.tensor([[2.0, 1.0, 100.0]])
    y = torch.tensor([[1.0, 0.0, 0.0]])
    masked = rk.listwise_loss(scores, torch.tensor([[True, True, False]]), y)
    expected = -torch.log_softmax(torch.tensor([2.0, 1.0]), 0)[0]
    assert torch.isclose(masked, expected)


def test_a_head_learns_only_from_the_lists_with_its_positives() -> None:
    """A list with no membership adds nothing (not a zero) to the support head's mean loss."""
    logits = torch.tensor([[[2.0, 0.0], [1.0, 3.0]], [[0.5, 0.0], [0.0, 0.0]]])  # (G=2, M=2, H=2)
    mask = torch.ones(2, 2, dtype=torch.bool)
    y = torch.tensor([[[1.0, 1.0], [0.0, 0.0]], [[0.0, 0.0], [1.0, 0.0]]])  # list 2: no head-2 positive
    got = rk.objectives_loss(logits, mask, y)
    head1 = rk.listwise_loss(logits[..., 0], mask, y[..., 0])
    head2 = rk.listwise_loss(logits[:1, :, 1], mask[:1], y[:1, :, 1])  # list 1 only
    assert torch.isclose(got, head1 + head2)


def test_ranker_onnx_has_the_score_and_one_output_per_objective_matching_torch() -> None:
    import onnxruntime as ort

    data = ranker_data()
    model = rk.build_model(rk.train_ranker(data, SMALL_RK, seed=0, log=lambda _: None), SMALL_RK)
    names = [rk.SCORE_OUTPUT, *(rk.head_output(n) for n in SMALL_RK.objectives)]
    graph = rk.RankerGraph(model)
    onnx_bytes = export_onnx(graph, 6, names)
    assert check_parity(graph, onnx_bytes, parity_inputs(data.x[data.mask]), atol=1e-4) <= 1e-4
    session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == names
    x = data.x[0]
    score, *heads = session.run(None, {"features": x})
    np.testing.assert_allclose(np.stack(heads, 1), rk.score_objectives(model, x), atol=1e-4)
    np.testing.assert_allclose(score, rk.score(model, x), atol=1e-4)


def test_retrieve_mirrors_serving_candidates() -> None:
    tt_scores = np.array([0.9, 0.8, 0.1, 0.7, 0.0, -0.5], dtype=np.float32)
    popularity = np.array([1.0, 0.0, 50.0, 3.0, 20.0, 10.0])
    cands = rk.retrieve(tt_scores, popularity, {0}, n_two_tower=2, n_popular=2)
    assert [(c.creator, c.source) for c in cands] == [
        (1, "two_tower"),
        (3, "two_tower"),
        (2, "popular"),
        (4, "popular"),
    ]
    assert all(c.creator != 0 for c in cands)  # known creators are never candidates
    assert cands[0].retrieval_score == pytest.approx(0.8)
    assert cands[2].retrieval_score == pytest.approx(1.0)  # the most popular scores 1 on the popular scale
    # Like retrieval_svc: only two-tower candidates carry a two-tower score...
    assert cands[2].two_tower_score is None and cands[3].two_tower_score is None
    # ...unless retrieval scores every candidate.
    scored = rk.retrieve(
        tt_scores, popularity, {0}, n_two_tower=2, n_popular=2, two_tower_score_for_popular=True
    )
    assert scored[3].two_tower_score == pytest.approx(0.0)


@pytest.mark.parametrize("total_steps", [1, 2, 3, 4, 9, 10, 11, 200])
def test_lr_schedule_survives_short_runs(total_steps: int) -> None:
    from trainer.schedule import one_cycle

    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.AdamW([param], lr=1e-3)
    sched = one_cycle(opt, max_lr=1e-3, total_steps=total_steps, warmup=0.1)
    for _ in range(total_steps):  # 10 steps at 10 % warm-up used to raise ZeroDivisionError
        opt.step()
        sched.step()
