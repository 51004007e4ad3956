"""ONNX export with a parity check, and the manifest every exported model carries.

Pitfalls handled here (see STACK.md): torch's default (dynamo) exporter writes weights to a separate
`model.onnx.data` file unless `external_data=False` — one file keeps one hash meaningful; an output named
"embedding" produced an invalid graph, so the user tower's output is "user_vector". Every export is run
through onnxruntime and compared with torch on random and real inputs; a difference above `atol` fails
the export rather than shipping a model that serves different numbers from the ones evaluated.
"""

from __future__ import annotations

import importlib.metadata
import logging
import platform
import tempfile
import time
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from kindred.features import FEATURE_SCHEMA_VERSION

OPSET = 18
INPUT_NAME = "features"


class ExportError(RuntimeError):
    """The exported graph does not reproduce the torch model."""


def export_onnx(model: nn.Module, n_features: int, output_name: str | Sequence[str]) -> bytes:
    """The model as ONNX bytes: input "features" float32 (B, n_features), dynamic batch; one output, or
    one per name when the model returns a tuple (e.g. the ranker's score and its objective heads)."""
    output_names = [output_name] if isinstance(output_name, str) else list(output_name)
    model = model.eval()
    example = torch.zeros(2, n_features)
    # The exporter logs "torchvision is not installed" for ops we never use, and torch.export raises a
    # FutureWarning from its own internals: neither is actionable here.
    onnx_log = logging.getLogger("torch.onnx")
    level = onnx_log.level
    onnx_log.setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory() as d, warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        path = Path(d) / "model.onnx"
        torch.onnx.export(
            model,
            (example,),
            str(path),
            input_names=[INPUT_NAME],
            output_names=output_names,
            dynamic_shapes=({0: torch.export.Dim("batch", min=1)},),
            opset_version=OPSET,
            dynamo=True,
            external_data=False,
            verbose=False,
        )
        onnx_log.setLevel(level)
        extra = [p.name for p in Path(d).iterdir() if p.name != "model.onnx"]
        if extra:
            raise ExportError(f"ONNX export wrote extra files {extra}; weights must be inline")
        return path.read_bytes()


def check_parity(
    model: nn.Module, onnx_bytes: bytes, inputs: npt.NDArray[np.float32], *, atol: float = 1e-4
) -> float:
    """Max |torch − onnxruntime| over `inputs` (and a batch of one) and every output; raises ExportError
    above `atol`."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(onnx_bytes, sess_options=options, providers=["CPUExecutionProvider"])
    worst = 0.0
    for batch in (inputs, inputs[:1]):
        x = np.ascontiguousarray(batch, dtype=np.float32)
        with torch.no_grad():
            out = model.eval()(torch.from_numpy(x))
        expected_all = [t.numpy() for t in (out if isinstance(out, tuple) else (out,))]
        got_all = session.run(None, {INPUT_NAME: x})
        if len(got_all) != len(expected_all):
            raise ExportError(f"ONNX graph has {len(got_all)} outputs, torch returns {len(expected_all)}")
        for got, expected in zip(got_all, expected_all, strict=True):
            if got.shape != expected.shape:
                raise ExportError(f"ONNX output shape {got.shape} != torch {expected.shape}")
            worst = max(worst, float(np.abs(got - expected).max()) if got.size else 0.0)
    if not worst <= atol:
        raise ExportError(f"ONNX and torch differ by {worst:.2e} (> {atol:.0e})")
    return worst


def parity_inputs(
    real: npt.NDArray[np.float32], n_random: int = 64, seed: int = 0
) -> npt.NDArray[np.float32]:
    """Real feature rows plus perturbed copies: parity must hold off the training distribution too."""
    rng = np.random.default_rng(seed)
    real = real[:256]
    if len(real) == 0:
        return rng.normal(size=(n_random, real.shape[1])).astype(np.float32)
    noisy = real[rng.integers(0, len(real), n_random)] + rng.normal(scale=0.5, size=(n_random, real.shape[1]))
    return np.concatenate([real, noisy.astype(np.float32)])


def library_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for dist in ("torch", "onnx", "onnxruntime", "onnxscript", "ray", "numpy", "kindred"):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return out


def iso(epoch_s: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch_s))


def build_manifest(
    *,
    name: str,
    version: str,
    output_name: str | Sequence[str],
    features: Sequence[str],
    data_window: Mapping[str, float],
    metrics: Mapping[str, Any],
    config: Mapping[str, Any],
    parity_max_abs_diff: float,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The manifest (kindred.models.write_model adds sha256 and checks nothing is missing at load)."""
    return {
        "name": name,
        "version": version,
        "created_at": iso(time.time()),
        "inputs": [INPUT_NAME],
        "outputs": [output_name] if isinstance(output_name, str) else list(output_name),
        "input_shape": ["batch", len(features)],
        "features": list(features),
        "feature_schema": FEATURE_SCHEMA_VERSION,
        "opset": OPSET,
        "data_window": {
            **{k: float(v) for k, v in data_window.items()},
            **{f"{k}_iso": iso(float(v)) for k, v in data_window.items()},
        },
        "metrics": dict(metrics),
        "parity_max_abs_diff": parity_max_abs_diff,
        "libraries": library_versions(),
        "config": dict(config),
        **dict(extra or {}),
    }
