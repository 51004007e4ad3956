"""CreatorCatalogue payload updates: all or nothing, or (for search's upserts) the known creators only."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from kindred.config import Settings
from kindred.errors import FailedPrecondition
from kindred.vectorstore import index_creators, open_creator_index
from retrieval_svc.creators import CreatorCatalogue


@pytest.fixture
def catalogue(tmp_path: Path) -> CreatorCatalogue:
    settings = Settings(data_dir=tmp_path)
    ids = ["c1", "c2"]
    vectors = np.eye(2, 8, dtype=np.float32)
    index_creators(settings, "v1", ids, vectors, [{"name": i, "category": "Music"} for i in ids])
    return CreatorCatalogue(open_creator_index(settings))


def payload(catalogue: CreatorCatalogue, creator_id: str) -> dict[str, object]:
    return dict(catalogue._index.fetch([creator_id])[0].payload)


def test_an_unknown_creator_fails_the_whole_update(catalogue: CreatorCatalogue) -> None:
    with pytest.raises(FailedPrecondition, match="trainer"):
        catalogue.update_payloads([{"creator_id": "c1", "category": "Art"}, {"creator_id": "new"}])
    assert payload(catalogue, "c1")["category"] == "Music"  # nothing written


def test_skip_unknown_updates_the_known_creators_only(catalogue: CreatorCatalogue) -> None:
    calls: list[int] = []
    catalogue._on_write.append(lambda: calls.append(1))
    updated = catalogue.update_payloads(
        [{"creator_id": "new", "category": "Art"}, {"creator_id": "c2", "category": "Art"}], skip_unknown=True
    )
    assert updated == 1 and payload(catalogue, "c2")["category"] == "Art" and calls == [1]
    assert catalogue.update_payloads([{"creator_id": "new"}], skip_unknown=True) == 0
    assert not catalogue._index.fetch(["new"])
