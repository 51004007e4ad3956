"""bench/recsys/served.py: a HetRec split becomes a platform data directory, and the served pages are
scored as the protocol scores a full ranking (on a small HetRec-shaped directory written here)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from bench.recsys import served as P
from bench.recsys.protocol import load_interactions, split_per_user
from kindred.data.catalogue import Catalogue
from kindred.eventlog import EventLog

N_USERS, N_ARTISTS, N_GROUPS = 60, 40, 4


def write_hetrec(root: Path, seed: int = 0) -> Path:
    """A HetRec-format directory: users listen mostly inside their group's artists; friends share a group."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    groups = np.array_split(np.arange(1, N_ARTISTS + 1), N_GROUPS)
    pairs = []
    for user in range(1, N_USERS + 1):
        own = groups[user % N_GROUPS]
        chosen = set(rng.choice(own, size=8, replace=False).tolist())
        chosen |= set(rng.choice(np.arange(1, N_ARTISTS + 1), size=3, replace=False).tolist())
        pairs += [(user, artist, int(rng.integers(1, 500))) for artist in sorted(chosen)]
    friends = [
        (u, v) for u in range(1, N_USERS + 1) for v in (u + N_GROUPS, u - N_GROUPS) if 1 <= v <= N_USERS
    ]

    def table(name: str, header: str, rows: Sequence[tuple[object, ...]]) -> None:
        lines = [header] + ["\t".join(map(str, r)) for r in rows]
        (root / name).write_text("\r\n".join(lines) + "\r\n", encoding="latin-1")

    table(
        "artists.dat",
        "id\tname\turl\tpictureURL",
        [(a, f"Artist {a}", "", "") for a in range(1, N_ARTISTS + 1)],
    )
    table("tags.dat", "tagID\ttagValue", [(g + 1, f"genre {g}") for g in range(N_GROUPS)])
    tagged = [(1, int(a), g + 1, 1, 1, 2010) for g, members in enumerate(groups) for a in members]
    table("user_taggedartists.dat", "userID\tartistID\ttagID\tday\tmonth\tyear", tagged)
    table("user_artists.dat", "userID\tartistID\tweight", pairs)
    table("user_friends.dat", "userID\tfriendID", friends)
    return root


@pytest.fixture(scope="module")
def hetrec(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_hetrec(tmp_path_factory.mktemp("hetrec"))


def test_only_train_pairs_become_follow_events_inside_the_window(hetrec: Path, tmp_path: Path) -> None:
    inter = load_interactions(hetrec)
    split = split_per_user(inter, seed=3)
    n = P.write_platform(tmp_path, hetrec, split, inter, window_days=10.0)
    with EventLog(tmp_path / "events") as log:
        events = list(log.read())
    assert n == len(events) == split.train.nnz
    train = {
        (f"u{inter.user_ids[u]}", f"a{inter.item_ids[i]}")
        for u, i in zip(*split.train.nonzero(), strict=True)
    }
    held_out = (split.valid + split.test).tocoo()
    hidden = {
        (f"u{inter.user_ids[u]}", f"a{inter.item_ids[i]}")
        for u, i in zip(held_out.row, held_out.col, strict=True)
    }
    pairs = {(e.fan_id, e.creator_id) for e in events}
    assert pairs == train and not pairs & hidden
    times = [e.occurred_at.seconds + e.occurred_at.nanos / 1e9 for e in events]
    assert times == sorted(times)
    assert min(times) >= P.END_TIME - 10 * P.DAY and max(times) <= P.END_TIME
    plays = {
        (f"u{inter.user_ids[u]}", f"a{inter.item_ids[i]}"): v
        for u, i, v in zip(*split.train.nonzero(), split.train.data, strict=True)
    }
    assert all(e.value == plays[(e.fan_id, e.creator_id)] for e in events)
    catalogue = Catalogue.load(tmp_path)
    assert len(catalogue.creators) == N_ARTISTS and catalogue.friendships
    with pytest.raises(FileExistsError):
        P.write_platform(tmp_path, hetrec, split, inter, window_days=10.0)


class _Pages:
    """Stands in for the service: fixed pages per fan, recording each request's exclusions."""

    def __init__(self, pages: dict[str, list[str]]) -> None:
        self.pages = pages
        self.excluded: dict[str, list[str]] = {}

    def page(self, fan_id: str, k: int, exclude: Sequence[str]) -> tuple[list[str], str]:
        self.excluded[fan_id] = list(exclude)
        return self.pages.get(fan_id, [])[:k], "" if fan_id in self.pages else "retrieval_empty"


def test_pages_are_scored_as_the_protocol_scores_a_ranking(hetrec: Path) -> None:
    inter = load_interactions(hetrec)
    split = split_per_user(inter, seed=1)
    users = split.eval_users("test")
    first, second = int(users[0]), int(users[1])

    test_of = {u: [f"a{inter.item_ids[c]}" for c in split.test[u].indices] for u in (first, second)}
    fan = {u: f"u{inter.user_ids[u]}" for u in (first, second)}
    # The first fan's page: a miss, then its first test item at rank 2; the second fan gets nothing.
    pages = _Pages({fan[first]: ["a-unknown", test_of[first][0]]})
    result = P.evaluate_pages(pages, split, inter, "test", k=3)
    n_rel = len(test_of[first])
    ideal = sum(1 / np.log2(i + 2) for i in range(min(n_rel, 3)))
    assert result.per_user["ndcg@3"][0] == pytest.approx((1 / np.log2(3)) / ideal)
    assert result.per_user["mrr@3"][0] == pytest.approx(0.5)
    assert result.per_user["ndcg@3"][1] == 0.0  # an empty page is all misses, not a skipped user
    assert len(result.per_user["ndcg@3"]) == len(users)
    assert result.short_pages == len(users) and result.fallbacks == len(users) - 1
    valid_first = [f"a{inter.item_ids[c]}" for c in split.valid[first].indices]
    assert sorted(pages.excluded[fan[first]]) == sorted(valid_first)  # test masks the valid items
    pages.excluded.clear()
    P.evaluate_pages(pages, split, inter, "valid", k=3)
    assert pages.excluded and not any(pages.excluded.values())  # valid masks train only: the follows


@pytest.mark.slow
def test_the_services_recommend_unseen_artists_after_the_platform_trains(
    hetrec: Path, tmp_path: Path
) -> None:
    inter = load_interactions(hetrec)
    split = split_per_user(inter, seed=0)
    P.write_platform(tmp_path, hetrec, split, inter, window_days=10.0)
    P.train_platform(tmp_path, "tiny", seed=0)
    served = P.ServedRecommender(tmp_path)
    try:
        user = int(split.eval_users("test")[0])
        known = {f"a{inter.item_ids[c]}" for m in (split.train, split.valid) for c in m[user].indices}
        page, fallback = served.page(f"u{inter.user_ids[user]}", 10, sorted(known))
        assert fallback == "" and len(page) == 10
        assert not set(page) & known  # train artists are follows, valid ones excluded by the request
        result = P.evaluate_pages(served, split, inter, "test", k=10)
        assert result.fallbacks == 0 and result.short_pages == 0
        assert 0.0 <= float(result.per_user["ndcg@10"].mean()) <= 1.0
    finally:
        served.close()


def test_serving_without_reranking_writes_a_config_ranking_reads_as_every_step_off(tmp_path: Path) -> None:
    from kindred.config import Settings
    from ranking_svc.rerank import RerankConfig, Reranker
    from ranking_svc.server import load_ranking_config

    settings = Settings.from_env({"KINDRED_DATA_DIR": str(tmp_path)})
    P.write_serving_config(tmp_path, P.PlatformConfig(rerank=False))
    rerank, _ = load_ranking_config(settings)
    assert Reranker.from_config(rerank).steps == []  # every step, whatever the defaults switch on
    P.write_serving_config(tmp_path, P.PlatformConfig(rerank=True))  # back to the shipped defaults
    assert load_ranking_config(settings)[0] == RerankConfig()


def test_a_second_row_of_the_same_run_serves_the_platform_the_first_trained(
    hetrec: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Training once per seed: the no-rerank row must serve the same models, and a platform trained for
    another seed or trainer config must never be served in its place."""
    inter = load_interactions(hetrec)
    split = split_per_user(inter, seed=0)
    trainings: list[str] = []
    served_configs: list[bool] = []

    def fake_train(data_dir: Path, trainer_config: str, seed: int) -> float:
        trainings.append(f"{trainer_config}:{seed}")
        return 1.0

    class Pages:
        def __init__(self, data_dir: Path) -> None:
            served_configs.append((data_dir / "config" / "ranking.json").exists())

        def page(self, fan_id: str, k: int, exclude: list[str]) -> tuple[list[str], str]:
            return [], ""

        def close(self) -> None:
            pass

    monkeypatch.setattr(P, "train_platform", fake_train)
    monkeypatch.setattr(P, "ServedRecommender", Pages)
    work = tmp_path / "seed0"
    shipped, platform = P.services_row(split, inter, hetrec, work, P.PlatformConfig(trainer_config="tiny"))
    off, again = P.services_row(
        split, inter, hetrec, work, P.PlatformConfig(trainer_config="tiny", rerank=False), trained=platform
    )
    assert trainings == ["tiny:0"] and again == platform
    assert not shipped["params"]["platform_reused"] and off["params"]["platform_reused"]
    assert served_configs == [False, True]  # the second row served with every re-ranking rule off
    other, _ = P.services_row(
        split, inter, hetrec, work, P.PlatformConfig(trainer_config="default"), trained=platform
    )
    assert trainings == ["tiny:0", "default:0"] and not other["params"]["platform_reused"]
