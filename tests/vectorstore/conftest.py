"""Fixtures: the same tiny collection on both engines, so every contract test runs against each."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from qdrant_client import QdrantClient
from vs_data import IndexFactory

from kindred.vectorstore import CREATOR_PAYLOAD_INDEXES, CREATOR_VECTOR, VectorIndex
from kindred.vectorstore.edge import EdgeIndex
from kindred.vectorstore.server import ServerIndex, create_collection


@pytest.fixture(params=["edge", "server"])
def make_index(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[IndexFactory]:
    """Builds empty indexes of a given dimension on the parametrised engine; closes them afterwards."""
    opened: list[VectorIndex] = []
    clients: list[QdrantClient] = []

    def factory(dim: int) -> VectorIndex:
        index: VectorIndex
        if request.param == "edge":
            index = EdgeIndex.create(
                tmp_path / f"shard{len(opened)}",
                dim=dim,
                vector_name=CREATOR_VECTOR,
                payload_indexes=CREATOR_PAYLOAD_INDEXES,
            )
        else:
            client = QdrantClient(location=":memory:")
            clients.append(client)
            create_collection(
                client,
                "creators_test",
                dim=dim,
                vector_name=CREATOR_VECTOR,
                local=True,
                payload_indexes=CREATOR_PAYLOAD_INDEXES,
            )
            index = ServerIndex(client, "creators_test", vector_name=CREATOR_VECTOR, dim=dim, local=True)
        opened.append(index)
        return index

    yield factory
    for index in opened:
        index.close()
    for client in clients:
        client.close()
