"""Serving-side dense text encoder: `tokenizers` + onnxruntime, mean pooling, L2 normalisation. No torch.

A text-encoder model version (written by trainer.text_encoder through kindred.models.write_model) is

    <models_dir>/text_encoder/<version>/model.onnx       transformer body: token ids → token embeddings
    <models_dir>/text_encoder/<version>/tokenizer.json   the HF fast tokenizer, as exported
    <models_dir>/text_encoder/<version>/manifest.json    inputs, outputs, max_length, pooling, dim, hashes

The graph stops at the token embeddings; pooling and normalisation happen here, in numpy, so the exact
arithmetic the parity check measured (this class against sentence-transformers) is what serves.

Pitfall handled (STACK.md): MiniLM's shipped tokenizer.json truncates and pads to a fixed 128, while the
model was trained at 256 with dynamic padding. The encoder always re-applies truncation to the manifest's
`max_length` and pads only to the longest text of each batch, whatever the tokenizer file says.

Loading checks the sha256 of model.onnx and tokenizer.json against the manifest and refuses
(kindred.errors.ModelMismatch) anything that was changed after export.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from kindred.errors import ModelMismatch
from kindred.models import MANIFEST_FILE, MODEL_FILE, open_session, read_manifest, verify_sha256, version_dir

MODEL_NAME: Final = "text_encoder"
# The int8 quantisation of the promoted MODEL_NAME, for queries (trainer.text_encoder int8-queries).
INT8_QUERY_MODEL_NAME: Final = "text_encoder_int8"
TOKENIZER_FILE: Final = "tokenizer.json"
# The manifest keys a text encoder needs on top of kindred.models' REQUIRED_MANIFEST_KEYS.
TEXT_MANIFEST_KEYS: Final = (
    "name",
    "version",
    "inputs",
    "outputs",
    "sha256",
    "tokenizer_sha256",
    "max_length",
    "pooling",
    "normalize",
    "dim",
)
# Inputs the encoder knows how to feed, by graph input name.
KNOWN_INPUTS: Final = ("input_ids", "attention_mask", "token_type_ids")
POOLINGS: Final = ("mean", "cls")
# Documents are encoded in batches of this many texts: large enough to amortise per-call overhead,
# small enough that padding to the longest text of a length-sorted batch wastes little.
DEFAULT_BATCH: Final = 32

FloatMatrix = npt.NDArray[np.float32]


def mean_pool(
    token_embeddings: npt.NDArray[np.floating], attention_mask: npt.NDArray[np.integer]
) -> FloatMatrix:
    """Mean of the token embeddings where the mask is 1: (B, T, D), (B, T) → (B, D).

    Padding positions must not count (sentence-transformers' Pooling(mean) semantics); the divisor is
    clamped like theirs (1e-9) so an all-padding row yields zeros rather than NaN.
    """
    if token_embeddings.ndim != 3 or attention_mask.shape != token_embeddings.shape[:2]:
        raise ValueError(
            f"token embeddings {token_embeddings.shape} do not match mask {attention_mask.shape}"
        )
    mask = attention_mask.astype(np.float32)[:, :, None]
    summed = (token_embeddings.astype(np.float32) * mask).sum(axis=1)
    counts = np.clip(mask.sum(axis=1), 1e-9, None)
    return (summed / counts).astype(np.float32)


def l2_normalize(x: npt.NDArray[np.floating], eps: float = 1e-12) -> FloatMatrix:
    """Rows scaled to unit L2 norm (torch.nn.functional.normalize semantics: norm clamped at eps)."""
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return (x / np.maximum(norms, eps)).astype(np.float32)


class TextEncoder:
    """Encodes texts to unit-norm float32 vectors with one onnxruntime session.

    Thread-safe for concurrent `encode` calls (onnxruntime sessions are; the tokenizer is used read-only
    through `encode_batch`, which does not mutate its truncation/padding state).
    """

    def __init__(
        self, session: Any, tokenizer: Any, manifest: Mapping[str, Any], *, path: Path | None = None
    ) -> None:
        self._session = session
        self._tokenizer = tokenizer
        self.manifest: dict[str, Any] = dict(manifest)
        self.path = path
        self.name: str = str(manifest.get("name", MODEL_NAME))
        self.version: str = str(manifest.get("version", ""))
        self.max_length: int = int(manifest["max_length"])
        self.dim: int = int(manifest["dim"])
        self.pooling: str = str(manifest["pooling"])
        self.normalize: bool = bool(manifest["normalize"])
        self.output_name: str = str(manifest["outputs"][0])
        self._inputs: list[str] = [i.name for i in session.get_inputs()]
        if self.pooling not in POOLINGS:
            raise ModelMismatch(
                f"text encoder {self.version}: unknown pooling {self.pooling!r} (know {POOLINGS})"
            )
        unknown = [i for i in self._inputs if i not in KNOWN_INPUTS]
        if unknown or "input_ids" not in self._inputs:
            raise ModelMismatch(
                f"text encoder {self.version}: graph inputs {self._inputs} (know {KNOWN_INPUTS})"
            )
        _configure_tokenizer(tokenizer, self.max_length)

    # -- loading -----------------------------------------------------------------------------------

    @classmethod
    def load(cls, directory: Path, *, intra_op_num_threads: int = 1) -> TextEncoder:
        """Loads the model version in `directory` after checking both files' hashes and the manifest."""
        directory = Path(directory)
        path = directory / MANIFEST_FILE
        try:
            manifest: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ModelMismatch(f"text encoder manifest {path} is unreadable: {exc}") from exc
        return cls._load(directory, manifest, intra_op_num_threads=intra_op_num_threads)

    @classmethod
    def from_registry(
        cls,
        models_dir: Path,
        *,
        name: str = MODEL_NAME,
        version: str | None = None,
        intra_op_num_threads: int = 1,
    ) -> TextEncoder:
        """Loads `<models_dir>/<name>/<version or CURRENT>` (FailedPrecondition if none was promoted)."""
        directory = version_dir(models_dir, name, version)
        return cls._load(
            directory,
            read_manifest(models_dir, name, directory.name),
            intra_op_num_threads=intra_op_num_threads,
        )

    @classmethod
    def _load(cls, directory: Path, manifest: Mapping[str, Any], *, intra_op_num_threads: int) -> TextEncoder:
        from tokenizers import Tokenizer

        missing = [k for k in TEXT_MANIFEST_KEYS if k not in manifest]
        if missing:
            raise ModelMismatch(f"text encoder at {directory}: manifest lacks {', '.join(missing)}")
        if manifest["version"] != directory.name:
            raise ModelMismatch(f"text encoder at {directory} claims to be version {manifest['version']}")
        model_path = directory / str(manifest.get("model_file", MODEL_FILE))
        tok_path = directory / TOKENIZER_FILE
        label = f"text encoder {directory.name}"
        for path, key in ((model_path, "sha256"), (tok_path, "tokenizer_sha256")):
            if not path.is_file():
                raise ModelMismatch(f"text encoder {directory.name}: {path.name} is missing")
            verify_sha256(path, str(manifest[key]), label=label)
        session = open_session(model_path, manifest, label=label, intra_op_num_threads=intra_op_num_threads)
        return cls(session, Tokenizer.from_file(str(tok_path)), manifest, path=directory)

    # -- encoding ----------------------------------------------------------------------------------

    def encode(self, texts: Sequence[str], *, batch_size: int = DEFAULT_BATCH) -> FloatMatrix:
        """(len(texts), dim) float32, row i for texts[i]; unit rows when the manifest says normalize.

        Texts are encoded in length-sorted batches (padding only to each batch's longest text), which
        is several times faster on a corpus of mixed lengths and changes no vector: padded positions are
        masked in attention and pooling.
        """
        if isinstance(texts, str):
            raise TypeError("encode takes a sequence of texts; use encode_one for a single text")
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        encodings = self._tokenizer.encode_batch(list(texts), add_special_tokens=True)
        order = np.argsort([len(e.ids) for e in encodings], kind="stable")
        for start in range(0, len(order), max(1, batch_size)):
            idx = order[start : start + batch_size]
            out[idx] = self._run([encodings[i] for i in idx])
        return out

    def encode_one(self, text: str) -> FloatMatrix:
        """(dim,) vector for one text: the query path."""
        return self.encode([text])[0]

    def count_tokens(self, text: str) -> int:
        """Tokens the model sees for `text` (after truncation), special tokens included."""
        return len(self._tokenizer.encode(text).ids)

    def _run(self, encodings: Sequence[Any]) -> FloatMatrix:
        width = max(len(e.ids) for e in encodings)
        batch = len(encodings)
        ids = np.zeros((batch, width), dtype=np.int64)
        mask = np.zeros((batch, width), dtype=np.int64)
        types = np.zeros((batch, width), dtype=np.int64)
        for row, enc in enumerate(encodings):
            n = len(enc.ids)
            ids[row, :n] = enc.ids
            mask[row, :n] = enc.attention_mask
            types[row, :n] = enc.type_ids
        feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
        tokens = self._session.run([self.output_name], {k: feeds[k] for k in self._inputs})[0]
        pooled = (
            mean_pool(tokens, mask) if self.pooling == "mean" else np.asarray(tokens[:, 0, :], np.float32)
        )
        if pooled.shape[1] != self.dim:
            raise ModelMismatch(
                f"text encoder {self.version}: graph yields {pooled.shape[1]}-d vectors, "
                f"manifest says {self.dim}"
            )
        return l2_normalize(pooled) if self.normalize else pooled

    def __repr__(self) -> str:
        return (
            f"TextEncoder({self.name!r}, version={self.version!r}, dim={self.dim}, "
            f"max_length={self.max_length})"
        )


def load_quantized_query_encoder(
    models_dir: Path, doc_encoder: TextEncoder, *, name: str = INT8_QUERY_MODEL_NAME
) -> TextEncoder:
    """The int8 quantisation (`trainer.text_encoder int8-queries`) of `doc_encoder`'s own graph, promoted
    under `models_dir` as `name`, to encode *queries* against documents `doc_encoder` encoded.

    About 2× less CPU per query than fp32 on this machine; on SciFact (bench/latency/query_int8.py) dense
    NDCG@10 0.6585 against 0.6602 with fp32 queries, recall@100 0.926 against 0.932. ModelMismatch
    unless it was quantised from exactly `doc_encoder`'s graph (manifest `fp32_sha256`) with its tokenizer.
    """
    quantized = TextEncoder.from_registry(models_dir, name=name)
    m, d = quantized.manifest, doc_encoder.manifest
    if (
        m.get("fp32_sha256") != d.get("sha256")
        or m.get("tokenizer_sha256") != d.get("tokenizer_sha256")
        or quantized.dim != doc_encoder.dim
        or quantized.max_length != doc_encoder.max_length
    ):
        raise ModelMismatch(
            f"query encoder {quantized.version} under {models_dir} is not a quantisation of document "
            f"encoder {doc_encoder.version} (fp32_sha256 {m.get('fp32_sha256')}, expected {d.get('sha256')})"
        )
    return quantized


def _configure_tokenizer(tokenizer: Any, max_length: int) -> None:
    # Truncate at the model's trained length; pad only within a batch. We pad ourselves in _run, so the
    # tokenizer must not pad at all (a fixed-length padding in the file would otherwise leak through).
    tokenizer.enable_truncation(max_length=max_length)
    tokenizer.no_padding()


def latency_stats(samples_s: Sequence[float]) -> dict[str, float]:
    """p50 / p99 / mean in milliseconds of a list of durations in seconds."""
    arr = np.asarray(samples_s, dtype=np.float64) * 1000.0
    if arr.size == 0:
        return {"p50_ms": float("nan"), "p99_ms": float("nan"), "mean_ms": float("nan"), "n": 0}
    return {
        "p50_ms": round(float(np.percentile(arr, 50)), 3),
        "p99_ms": round(float(np.percentile(arr, 99)), 3),
        "mean_ms": round(float(arr.mean()), 3),
        "n": int(arr.size),
    }


def measure_latency(encoder: TextEncoder, texts: Sequence[str], *, warmup: int = 5) -> dict[str, float]:
    """Single-text encode latency (tokenize + run + pool) over `texts`, one at a time."""
    for text in list(texts)[:warmup]:
        encoder.encode_one(text)
    samples = []
    for text in texts:
        t0 = time.perf_counter()
        encoder.encode_one(text)
        samples.append(time.perf_counter() - t0)
    return latency_stats(samples)


__all__ = [
    "INT8_QUERY_MODEL_NAME",
    "MODEL_NAME",
    "TOKENIZER_FILE",
    "TextEncoder",
    "l2_normalize",
    "latency_stats",
    "load_quantized_query_encoder",
    "mean_pool",
    "measure_latency",
]
