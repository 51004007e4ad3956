"""Settings: from a dict, typed, unknown keys rejected."""

from __future__ import annotations

from pathlib import Path

import pytest

from kindred.config import Settings, SettingsError


def test_builds_from_a_dict_with_types() -> None:
    s = Settings.from_env({"KINDRED_DATA_DIR": "/tmp/x", "KINDRED_RANKING_PORT": "6000", "PATH": "/bin"})
    assert s.data_dir == Path("/tmp/x")
    assert s.ranking_port == 6000
    assert s.resolved_models_dir == Path("/tmp/x/models")
    assert s.resolved_ranking_target == "127.0.0.1:6000"


def test_unknown_keys_are_rejected_with_the_key_named() -> None:
    with pytest.raises(SettingsError, match="KINDRED_DATADIR"):
        Settings.from_env({"KINDRED_DATADIR": "/tmp/x"})


def test_bad_values_are_rejected() -> None:
    with pytest.raises(SettingsError, match="KINDRED_ONLINE_STORE"):
        Settings.from_env({"KINDRED_ONLINE_STORE": "postgres"})
    with pytest.raises(SettingsError, match="KINDRED_NOTIFY_PORT"):
        Settings.from_env({"KINDRED_NOTIFY_PORT": "many"})


def test_settings_are_frozen() -> None:
    s = Settings.from_env({})
    with pytest.raises(AttributeError):
        s.host = "0.0.0.0"  # type: ignore[misc]


def test_server_threads_default_by_role_and_an_explicit_value_wins() -> None:
    # A co-located ranking process never waits on a retrieval hop: two threads; a mesh ranking eight.
    from ranking_svc.server import SPEC as RANKING

    assert RANKING.server_threads(Settings.from_env({})) == 8
    colocated = Settings.from_env({"KINDRED_RETRIEVAL_TARGET": "inprocess"})
    assert colocated.colocated and RANKING.server_threads(colocated) == 2
    assert RANKING.server_threads(Settings.from_env({"KINDRED_RETRIEVAL_TARGET": "10.0.0.7:50051"})) == 8
    explicit = Settings.from_env({"KINDRED_RETRIEVAL_TARGET": "inprocess", "KINDRED_SERVER_THREADS": "6"})
    assert RANKING.server_threads(explicit) == 6
    assert explicit.server_threads_for(computes_only=False) == 6


def test_server_threads_below_one_are_refused() -> None:
    with pytest.raises(SettingsError, match="KINDRED_SERVER_THREADS"):
        Settings.from_env({"KINDRED_SERVER_THREADS": "0"})
