"""A small generated platform shared by the data tests (generated once per session)."""

from __future__ import annotations

import pytest
from data_testkit import Platform, make_platform


@pytest.fixture(scope="session")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Platform:
    return make_platform(tmp_path_factory.mktemp("platform"))
