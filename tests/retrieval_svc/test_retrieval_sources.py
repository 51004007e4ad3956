"""The two real candidate sources over a real qdrant-edge index and a real ONNX user tower."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from rs_helpers import (
    FakeStore,
    SpyIndex,
    embed,
    fan_row,
    popular_lists,
    tiny_catalogue,
    user_tower_weights,
    write_user_tower,
)

from kindred.config import Settings
from kindred.features import USER_TOWER_FEATURES, user_tower_features
from kindred.models import OnnxModel, load_model
from kindred.vectorstore import PayloadFilter, VectorIndex, index_creators, open_creator_index
from retrieval_svc.sources import SourceRequest, SourceSkipped
from retrieval_svc.sources.popular import PopularSource
from retrieval_svc.sources.two_tower import TwoTowerSource

N = 120


@pytest.fixture(scope="module")
def world(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[VectorIndex, OnnxModel, np.ndarray, np.ndarray, list[dict]]]:  # type: ignore[type-arg]
    settings = Settings(data_dir=tmp_path_factory.mktemp("sources"))
    ids, vectors, payloads = tiny_catalogue(N)
    index_creators(settings, "v1", ids, vectors, payloads)
    weights = user_tower_weights()
    write_user_tower(settings.resolved_models_dir, "v1", weights)
    index = open_creator_index(settings)
    model = load_model(settings.resolved_models_dir, "two_tower_user", expected_features=USER_TOWER_FEATURES)
    yield index, model, weights, vectors, payloads
    index.close()


def _expected(
    query: np.ndarray, vectors: np.ndarray, payloads: list[dict], flt: PayloadFilter, k: int
) -> list[str]:  # type: ignore[type-arg]
    order = np.argsort(-(vectors @ query), kind="stable")
    ids = [payloads[i]["creator_id"] for i in order]
    return [i for i, j in zip(ids, order, strict=True) if flt.matches(i, payloads[j])][:k]


def test_two_tower_returns_the_filtered_nearest_creators_of_the_fans_embedding(world) -> None:  # type: ignore[no-untyped-def]
    index, model, weights, vectors, payloads = world
    source = TwoTowerSource(model, index, user_tower_features)
    fan = fan_row("f1", ["c001", "c002", "c007"], interests=["Music"])
    flt = PayloadFilter.build(languages=["en", "fr"], exclude_mature=True).excluding(fan["following"])

    hits = source.retrieve(SourceRequest("f1", fan, flt, 10))

    query = embed(fan, weights)
    assert [h.item_id for h in hits] == _expected(query, vectors, payloads, flt, 10)
    expected_scores = [float(vectors[int(h.item_id[1:])] @ query) for h in hits]
    np.testing.assert_allclose([h.score for h in hits], expected_scores, atol=1e-4)  # cosine


def test_two_tower_skips_a_new_fan_and_fails_when_the_store_failed(world) -> None:  # type: ignore[no-untyped-def]
    index, model, *_ = world
    source = TwoTowerSource(model, index, user_tower_features)
    with pytest.raises(SourceSkipped, match="new fan"):
        source.retrieve(SourceRequest("new", None, PayloadFilter(), 5))
    with pytest.raises(RuntimeError, match="fan features unavailable"):
        source.retrieve(SourceRequest("f1", None, PayloadFilter(), 5, fan_error="TimeoutError"))


def test_popular_filters_the_list_inside_the_engine_and_keeps_its_order(world) -> None:  # type: ignore[no-untyped-def]
    index, _, _, _, payloads = world
    ids = [p["creator_id"] for p in payloads]
    store = FakeStore({"popular": {"global": popular_lists(ids, payloads)["global"]}})
    flt = PayloadFilter.build(languages=["de"], exclude_mature=True, exclude_ids=["c008"])

    hits = PopularSource(store, index).retrieve(SourceRequest("f1", None, flt, 7))

    expected = [i for i, p in zip(ids, payloads, strict=True) if flt.matches(i, p)][:7]
    assert [h.item_id for h in hits] == expected
    assert all(h.reason == "popular on Kindred" for h in hits)
    assert hits[0].score > hits[-1].score


def test_popular_puts_the_fans_interest_lists_first(world) -> None:  # type: ignore[no-untyped-def]
    index, _, _, _, payloads = world
    ids = [p["creator_id"] for p in payloads]
    store = FakeStore({"popular": popular_lists(ids, payloads)})
    fan = fan_row("f1", [], interests=["Gaming"])

    hits = PopularSource(store, index).retrieve(SourceRequest("f1", fan, PayloadFilter(), 40))

    gaming = [h for h in hits if h.reason == "popular in Gaming"]
    assert len(gaming) == N // 4 and hits[: len(gaming)] == gaming
    assert {payloads[int(h.item_id[1:])]["category"] for h in gaming} == {"Gaming"}
    assert len({h.item_id for h in hits}) == 40  # the global list continues without repeats
    assert ("popular", ("category:Gaming", "global")) in store.reads


def test_popular_without_a_list_fails_loudly(world) -> None:  # type: ignore[no-untyped-def]
    index, *_ = world
    with pytest.raises(LookupError, match="run the trainer"):
        PopularSource(FakeStore(), index).retrieve(SourceRequest("f1", None, PayloadFilter(), 5))


def test_the_user_tower_output_matches_numpy(world, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    _, model, weights, *_ = world
    fans = [fan_row("a", ["c001"]), fan_row("b", ["c050", "c051"], interests=["Art"], language="fr"), None]
    x = np.stack([user_tower_features(f) for f in fans])
    out = model.run(x)
    assert out.shape == (3, 8)
    np.testing.assert_allclose(out, np.stack([embed(f, weights) for f in fans]), atol=1e-5)


def test_popular_caches_the_engine_filtered_list_and_still_applies_per_fan_exclusions(world) -> None:  # type: ignore[no-untyped-def]
    index, _, _, _, payloads = world
    ids = [p["creator_id"] for p in payloads]
    store = FakeStore({"popular": {"global": popular_lists(ids, payloads)["global"]}})
    now = [0.0]
    cached = PopularSource(store, index, cache_ttl_s=30.0, clock=lambda: now[0])
    uncached = PopularSource(store, index, cache_ttl_s=-1.0)
    base = PayloadFilter.build(languages=["en", "fr"], exclude_mature=True)

    for excluded in [[], ["c001", "c002"], ids[:40], ["c004"]]:
        flt = base.excluding(excluded)
        got = cached.retrieve(SourceRequest("f", None, flt, 10))
        expected = uncached.retrieve(SourceRequest("f", None, flt, 10))
        assert [h.item_id for h in got] == [h.item_id for h in expected]
        assert len(got) == 10 and not set(excluded) & {h.item_id for h in got}
    reads = [keys for ns, keys in store.reads if ns == "popular"]
    assert reads[0] == ("language:en", "language:fr", "global")
    assert len(reads) == 1 + 4  # the cached source read the store once, the uncached one every time

    store.data["popular"]["global"] = {"creator_ids": ["c099", "c098"], "scores": [2.0, 1.0]}
    assert [h.item_id for h in cached.retrieve(SourceRequest("f", None, base, 2))] != ["c099", "c098"]
    now[0] = 31.0  # past the TTL: the new list shows
    fresh = cached.retrieve(SourceRequest("f", None, base, 2))
    assert [h.item_id for h in fresh] == ["c099", "c098"]
    store.data["popular"]["global"] = {"creator_ids": ["c097"], "scores": [1.0]}
    cached.invalidate()
    assert [h.item_id for h in cached.retrieve(SourceRequest("f", None, base, 2))] == ["c097"]


def test_popular_fans_with_other_interests_and_exclusions_share_the_cached_lists(world) -> None:  # type: ignore[no-untyped-def]
    inner, _, _, _, payloads = world
    index = SpyIndex(inner)
    ids = [p["creator_id"] for p in payloads]
    store = FakeStore({"popular": popular_lists(ids, payloads)})
    cached = PopularSource(store, index, cache_ttl_s=30.0, clock=lambda: 0.0)
    uncached = PopularSource(store, inner, cache_ttl_s=-1.0)
    base = PayloadFilter.build(languages=["en", "fr"], exclude_mature=True)
    for fan_id, interests in [("f1", ["Gaming"]), ("f2", ["Music"])]:
        cached.retrieve(SourceRequest(fan_id, fan_row(fan_id, [], interests=interests), base, 12))
    index.fetches.clear()
    store.reads.clear()

    fan = fan_row("f3", ["c001", "c002", "c012"], interests=["Music", "Gaming"])
    flt = base.excluding(fan["following"])
    hits = cached.retrieve(SourceRequest("f3", fan, flt, 12))

    assert index.fetches == [] and store.reads == []  # a new combination of cached lists: no engine call
    expected = uncached.retrieve(SourceRequest("f3", fan, flt, 12))
    assert [(h.item_id, h.score, h.reason) for h in hits] == [
        (h.item_id, h.score, h.reason) for h in expected
    ]
    by_id = dict(zip(ids, payloads, strict=True))
    assert len(hits) == 12 and all(flt.matches(h.item_id, by_id[h.item_id]) for h in hits)
    assert {h.reason for h in hits} == {"popular in Music", "popular in Gaming"}
    other = PayloadFilter.build(languages=["de"])  # another engine filter is its own entry
    cached.retrieve(SourceRequest("f3", fan, other, 5))
    assert {f for _, f in index.fetches} == {other}
