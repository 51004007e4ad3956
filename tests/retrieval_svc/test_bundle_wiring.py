"""build_bundle: every candidate source hears about every write to the creator index."""

from __future__ import annotations

from pathlib import Path

from rs_helpers import FakeStore, tiny_catalogue, user_tower_weights, write_user_tower

from kindred.config import Settings
from kindred.features import USER_TOWER_FEATURES
from kindred.models import load_model
from kindred.vectorstore import index_creators, open_creator_index
from retrieval_svc.server import RetrievalDeps, build_bundle


def test_each_source_is_invalidated_by_index_writes(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    ids, vectors, payloads = tiny_catalogue(12)
    index_creators(settings, "v1", ids, vectors, payloads)
    write_user_tower(settings.resolved_models_dir, "v1", user_tower_weights())
    index = open_creator_index(settings)
    model = load_model(settings.resolved_models_dir, "two_tower_user", expected_features=USER_TOWER_FEATURES)
    try:
        bundle = build_bundle(RetrievalDeps(index=index, user_tower=model, store=FakeStore()), index, model)
        sources = bundle.retriever._sources
        assert len(sources) == 5
        # A source left out here would serve cached verdicts/lists about creators deleted or changed.
        assert bundle.creators._on_write == [s.invalidate for s in sources]
    finally:
        index.close()
