"""The int8 query encoder: exported from the promoted fp32 graph (trainer.text_encoder int8-queries) and
served by retrieval for queries only — and never when it was quantised from another graph, or when a
tuned query side (whose fusion was fitted on fp32 scores) is promoted."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from search_testkit import write_tiny_encoder

from kindred.config import Settings
from kindred.errors import ModelMismatch
from kindred.models import current_version
from kindred.text.encoder import INT8_QUERY_MODEL_NAME, load_quantized_query_encoder
from kindred.text.fusion import FusionModel
from retrieval_svc.server import open_search
from trainer.text_encoder import export_int8_queries, main

# The tiny encoder knows only its topic words (the MiniLM parity texts would all be unknown tokens).
TEXTS = ("jazz piano chords", "pasta sauce garlic", "speedrun boss", "watercolor ink portrait")


def test_the_companion_is_a_quantisation_of_the_promoted_graph(tmp_path: Path) -> None:
    fp32 = write_tiny_encoder(tmp_path)
    directory = export_int8_queries(tmp_path, do_promote=True, texts=TEXTS, log=lambda *_: None)
    assert directory.parent.name == INT8_QUERY_MODEL_NAME and current_version(tmp_path, INT8_QUERY_MODEL_NAME)
    manifest = json.loads((directory / "manifest.json").read_text())
    assert manifest["fp32_sha256"] == fp32.manifest["sha256"] and manifest["quantization"] == "int8-dynamic"
    assert manifest["parity"]["min_cosine"] >= manifest["parity"]["min_cosine_required"]
    int8 = load_quantized_query_encoder(tmp_path, fp32)
    texts = ["jazz piano chords", "pasta sauce"]
    assert np.allclose(int8.encode(texts), fp32.encode(texts), atol=1e-3)


def test_a_companion_of_another_graph_is_refused(tmp_path: Path) -> None:
    write_tiny_encoder(tmp_path)
    export_int8_queries(tmp_path, do_promote=True, texts=TEXTS, log=lambda *_: None)
    other = write_tiny_encoder(tmp_path / "other", "tiny-v2")
    other.manifest = {**other.manifest, "sha256": "0" * 64}  # as if another export of the weights
    with pytest.raises(ModelMismatch, match="not a quantisation"):
        load_quantized_query_encoder(tmp_path, other)


def test_the_cli_needs_a_promoted_encoder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["int8-queries", "--models", str(tmp_path)]) == 1
    assert "text_encoder" in capsys.readouterr().err
    assert main(["export", "--out", str(tmp_path), "--int8-queries"]) == 1  # only with --promote
    assert "--promote" in capsys.readouterr().err


def _served_query_encoder_quantization(settings: Settings) -> object:
    svc = open_search(settings)
    assert svc is not None
    try:
        quantization = svc.searcher.encoder.manifest.get("quantization")
        # Responses name the query model: an int8 one says so.
        assert svc.searcher.version.endswith("-int8") == (quantization is not None)
        return quantization
    finally:
        svc.close()


def test_retrieval_encodes_queries_with_the_promoted_int8_companion(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    models = settings.resolved_models_dir
    write_tiny_encoder(models)
    assert _served_query_encoder_quantization(settings) is None  # none promoted: fp32 queries
    export_int8_queries(models, do_promote=True, texts=TEXTS, log=lambda *_: None)
    assert _served_query_encoder_quantization(settings) == "int8-dynamic"
    # Documents keep the fp32 encoder: the service's `encoder` (upserts) is not the query one.
    svc = open_search(settings)
    assert svc is not None
    try:
        assert svc.encoder.manifest.get("quantization") is None
    finally:
        svc.close()


def test_a_tuned_query_side_keeps_fp32_queries(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    models = settings.resolved_models_dir
    fp32 = write_tiny_encoder(models)
    export_int8_queries(models, do_promote=True, texts=TEXTS, log=lambda *_: None)
    write_tiny_encoder(
        models,
        "tuned-1",
        name="text_query_encoder",
        extra_manifest={"document_encoder": {"sha256": fp32.manifest["sha256"]}},
        extra_files={"fusion.json": json.dumps(FusionModel.default().to_dict()).encode()},
    )
    assert _served_query_encoder_quantization(settings) is None
