"""Fixtures for the retrieval tests: one small real qdrant-edge creator index shared per module."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from rs_helpers import IndexedCreators, SpyIndex, tiny_catalogue

from kindred.config import Settings
from kindred.vectorstore import index_creators, open_creator_index

N_CREATORS = 120


@pytest.fixture(scope="module")
def edge_catalogue(tmp_path_factory: pytest.TempPathFactory) -> Iterator[IndexedCreators]:
    settings = Settings(data_dir=tmp_path_factory.mktemp("edge"))
    ids, vectors, payloads = tiny_catalogue(N_CREATORS)
    index_creators(settings, "v1", ids, vectors, payloads)
    index = open_creator_index(settings)
    try:
        yield IndexedCreators(SpyIndex(index), ids, dict(zip(ids, payloads, strict=True)))
    finally:
        index.close()


@pytest.fixture()
def creators(edge_catalogue: IndexedCreators) -> IndexedCreators:
    edge_catalogue.index.fetches.clear()
    return edge_catalogue
