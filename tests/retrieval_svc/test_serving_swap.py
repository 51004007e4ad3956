"""Hot swap of the serving bundle: reference counting, the version watcher, and the real thing end to end.

The end-to-end test serves v1 (a real qdrant-edge index and a real ONNX tower) through gRPC with the
watcher polling, holds one request in the middle of its work, publishes v2 the way the trainer does
(build the index without switching, promote the tower, then the index) and checks: nothing switches
until the pair is complete, new requests then get v2, the held request finishes on v1, and v1's index
is closed only after that.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import pytest
from rs_helpers import FakeStore, fan_row, tiny_catalogue, user_tower_weights, write_user_tower

from kindred.config import Settings
from kindred.errors import Unavailable
from kindred.v1 import retrieval_pb2, retrieval_pb2_grpc
from kindred.vectorstore import VectorIndexError, index_creators, promote_creator_index
from retrieval_svc.server import RetrievalDeps, create_server, open_versioned, promoted_versions
from retrieval_svc.serving import BundleSwitch, BundleWatcher, NotReady, ServingBundle, VersionKey

# --------------------------------------------------------------------------------------------------
# BundleSwitch and BundleWatcher with fake bundles
# --------------------------------------------------------------------------------------------------


class Closing:
    """Counts closes of one fake bundle and checks nobody was still using it."""

    def __init__(self) -> None:
        self.closed = 0
        self.in_use = 0
        self.lock = threading.Lock()

    def __call__(self) -> None:
        with self.lock:
            assert self.in_use == 0, "closed while a request was using it"
            self.closed += 1


def fake_bundle(version: str) -> tuple[ServingBundle, Closing]:
    closing = Closing()
    return ServingBundle(version, version, None, None, closing), closing  # type: ignore[arg-type]


def test_a_request_keeps_its_bundle_across_a_swap_and_the_old_one_closes_after_it() -> None:
    v1, c1 = fake_bundle("v1")
    v2, c2 = fake_bundle("v2")
    switch = BundleSwitch(v1)
    with switch.acquire() as during:
        assert switch.swap(v2) is v1
        assert during is v1 and c1.closed == 0  # still in use
        with switch.acquire() as fresh:
            assert fresh is v2
    assert c1.closed == 1 and c2.closed == 0
    v3, c3 = fake_bundle("v3")
    switch.swap(v3)  # nobody on v2: closed at once
    assert c2.closed == 1
    switch.close()
    assert c3.closed == 1
    with pytest.raises(Unavailable), switch.acquire():
        pass


def test_under_concurrent_requests_every_bundle_closes_once_and_never_while_used() -> None:
    first, first_closing = fake_bundle("v0")
    switch = BundleSwitch(first)
    closings = [first_closing]
    stop = threading.Event()
    seen: list[str] = []

    def reader() -> None:
        while not stop.is_set():
            with switch.acquire() as bundle:
                closing = bundle.close
                assert isinstance(closing, Closing)
                with closing.lock:
                    assert closing.closed == 0, "got a closed bundle"
                    closing.in_use += 1
                seen.append(bundle.index_version)
                time.sleep(0.0005)
                with closing.lock:
                    closing.in_use -= 1

    with ThreadPoolExecutor(6) as pool:
        futures = [pool.submit(reader) for _ in range(6)]
        for i in range(1, 40):
            bundle, closing = fake_bundle(f"v{i}")
            closings.append(closing)
            switch.swap(bundle)
            time.sleep(0.002)
        stop.set()
        for f in futures:
            f.result()
    switch.close()
    assert [c.closed for c in closings] == [1] * len(closings)
    assert len(set(seen)) > 5


def test_the_watcher_swaps_on_a_new_key_waits_when_not_ready_and_backs_off_after_a_failure() -> None:
    v1, _ = fake_bundle("v1")
    switch = BundleSwitch(v1)
    now = [0.0]
    key: list[VersionKey | None] = [("v1", "v1")]
    builds: list[VersionKey] = []
    behaviour: list[Callable[[VersionKey], ServingBundle]] = []

    def build(k: VersionKey) -> ServingBundle:
        builds.append(k)
        return behaviour.pop(0)(k)

    watcher = BundleWatcher(switch, probe=lambda: key[0], build=build, retry_s=60.0, clock=lambda: now[0])
    assert not watcher.check() and builds == []  # nothing new
    key[0] = None
    assert not watcher.check() and builds == []  # mid-promotion

    key[0] = ("v2", "v2")

    def fail(k: VersionKey) -> ServingBundle:
        raise OSError("shard locked")

    def not_ready(k: VersionKey) -> ServingBundle:
        raise NotReady("tower belongs to another index")

    behaviour += [fail]
    assert not watcher.check() and switch.current is v1
    assert not watcher.check() and len(builds) == 1  # backing off
    now[0] = 61.0
    behaviour += [not_ready, lambda k: fake_bundle(k[0])[0]]
    assert not watcher.check() and switch.current is v1
    assert watcher.check() and switch.current.key == ("v2", "v2")  # NotReady retries at the next poll
    assert len(builds) == 3


def test_the_watcher_thread_polls_and_stops() -> None:
    v1, c1 = fake_bundle("v1")
    switch = BundleSwitch(v1)
    key = [("v1", "v1")]
    watcher = BundleWatcher(switch, probe=lambda: key[0], build=lambda k: fake_bundle(k[0])[0], poll_s=0.01)
    watcher.start()
    try:
        key[0] = ("v2", "v2")
        deadline = time.monotonic() + 5
        while switch.current.key != ("v2", "v2"):
            assert time.monotonic() < deadline, "the watcher never swapped"
            time.sleep(0.01)
        assert c1.closed == 1
    finally:
        watcher.stop()


# --------------------------------------------------------------------------------------------------
# End to end: real indexes and towers, through gRPC
# --------------------------------------------------------------------------------------------------


class HoldingStore(FakeStore):
    """Blocks a read of the fan "slow" until `release` is set: a request held in mid-flight."""

    def __init__(self, data: dict[str, dict[str, Any]]) -> None:
        super().__init__(data)
        self.holding = threading.Event()
        self.release = threading.Event()

    def get(self, namespace: str, keys: Sequence[str]) -> list[dict[str, Any] | None]:
        if namespace == "fan" and list(keys) == ["slow"]:
            self.holding.set()
            assert self.release.wait(20)
        return super().get(namespace, keys)


def _publish_index(settings: Settings, version: str, prefix: str, *, promote: bool) -> list[str]:
    ids, vectors, payloads = tiny_catalogue(40, seed=len(prefix), prefix=prefix)
    index_creators(settings, version, ids, vectors, payloads, promote=promote)
    return ids


def test_new_versions_swap_in_while_a_request_in_flight_finishes_on_the_old_one(tmp_path: Path) -> None:
    # The held read stands for a store over the network (Redis), where other requests must not wait
    # behind it: such a deployment runs without the compute gate (Settings.local_reads_only).
    settings = Settings(data_dir=tmp_path, online_store="redis")
    v1_ids = _publish_index(settings, "v1", "a", promote=True)
    write_user_tower(settings.resolved_models_dir, "v1", user_tower_weights(1), index_version="v1")
    store = HoldingStore({"fan": {"f1": fan_row("f1", []), "slow": fan_row("slow", [])}})
    index, tower = open_versioned(settings)
    deps = RetrievalDeps(
        index=index, user_tower=tower, store=store, close_index=index.close, reload_poll_s=0.05
    )
    server = create_server(settings, deps, port=0).start()
    channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
    stub = retrieval_pb2_grpc.RetrievalServiceStub(channel)

    def ask(fan: str) -> retrieval_pb2.RetrieveResponse:
        request = retrieval_pb2.RetrieveRequest(fan_id=fan, k=5, source_quotas={"two_tower": 5})
        return stub.Retrieve(request, timeout=30)

    def polls(n: int = 4) -> None:
        time.sleep(n * 0.05 + 0.1)

    try:
        assert ask("f1").model.version == "v1"
        with ThreadPoolExecutor(1) as pool:
            held = pool.submit(ask, "slow")
            assert store.holding.wait(10)

            v2_ids = _publish_index(settings, "v2", "b", promote=False)  # built, not switched on
            polls()
            assert ask("f1").model.version == "v1"
            write_user_tower(settings.resolved_models_dir, "v2", user_tower_weights(2), index_version="v2")
            assert promoted_versions(settings) is None  # tower moved, index not yet: not a pair
            polls()
            assert ask("f1").model.version == "v1"
            promote_creator_index(settings, "v2")
            deadline = time.monotonic() + 10
            while (fresh := ask("f1")).model.version != "v2":
                assert time.monotonic() < deadline, "v2 never came into service"
                time.sleep(0.05)
            assert {c.item_id for c in fresh.candidates} <= set(v2_ids)

            index.count()  # v1 is still open: a request is using it
            store.release.set()
            old = held.result(timeout=20)
        assert old.model.version == "v1"
        assert len(old.candidates) == 5 and {c.item_id for c in old.candidates} <= set(v1_ids)
        with pytest.raises(VectorIndexError):
            index.count()  # closed once its last request ended
    finally:
        store.release.set()
        channel.close()
        server.stop(0)
        deps.close()
