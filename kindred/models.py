"""The model registry: versioned ONNX models on disk, their manifests, and loading them for serving.

Layout under `models_dir` (Settings.resolved_models_dir):

    <name>/<version>/model.onnx       the graph (weights inline: one file, one hash)
    <name>/<version>/manifest.json    what the model is and how to feed it (see below)
    <name>/<version>/...              optional extra artefacts (e.g. creator embeddings)
    <name>/CURRENT                    text: the version services load

A manifest carries at least: name, version, created_at, inputs/outputs (names), features (the exact
input feature order), opset, data_window, metrics, sha256 (of model.onnx), libraries, config.

`load_model` is the one gate between a file and a server: it refuses (kindred.errors.ModelMismatch) a
model whose bytes do not hash to the manifest's sha256 or whose feature order is not exactly what the
server will feed it, naming the difference. Services import onnxruntime through here only; no torch.

Writes are atomic: a version directory is written under a temporary name and renamed into place, and
CURRENT is replaced by rename, so a reader never sees half a model or a dangling pointer.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from kindred.errors import FailedPrecondition, ModelMismatch

MODEL_FILE: Final = "model.onnx"
MANIFEST_FILE: Final = "manifest.json"
CURRENT_FILE: Final = "CURRENT"
REQUIRED_MANIFEST_KEYS: Final = ("name", "version", "inputs", "outputs", "features", "sha256")
_SAFE: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_HASH_CHUNK: Final = 1 << 20


def _check_segment(kind: str, value: str) -> str:
    # Names and versions become path segments: refuse anything that could escape models_dir.
    if not _SAFE.match(value):
        raise ValueError(f"model {kind} {value!r} must match {_SAFE.pattern}")
    return value


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_bytes(path: Path, data: bytes) -> None:
    with open(path, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def write_model(
    models_dir: Path,
    name: str,
    version: str,
    onnx_path_or_bytes: Path | str | bytes,
    manifest: Mapping[str, Any],
    *,
    extra_files: Mapping[str, Path | bytes] | None = None,
) -> Path:
    """Writes `<models_dir>/<name>/<version>/` atomically; returns that directory.

    The manifest is completed with name, version, sha256 and model_file (and created_at if absent).
    Refuses to overwrite an existing version: versions are immutable once written.
    """
    _check_segment("name", name)
    _check_segment("version", version)
    model_root = Path(models_dir) / name
    final = model_root / version
    if final.exists():
        raise FileExistsError(f"model {name} version {version} already exists at {final}")
    model_root.mkdir(parents=True, exist_ok=True)
    data = (
        onnx_path_or_bytes if isinstance(onnx_path_or_bytes, bytes) else Path(onnx_path_or_bytes).read_bytes()
    )
    staging = Path(tempfile.mkdtemp(prefix=f".{version}.", dir=model_root))
    try:
        _write_bytes(staging / MODEL_FILE, data)
        for fname, content in (extra_files or {}).items():
            _check_segment("file", fname)
            if fname in (MODEL_FILE, MANIFEST_FILE):
                raise ValueError(f"extra file {fname!r} would overwrite the model or its manifest")
            if isinstance(content, bytes):
                _write_bytes(staging / fname, content)
            else:
                shutil.copyfile(content, staging / fname)
        full = dict(manifest)
        full.update(
            name=name, version=version, model_file=MODEL_FILE, sha256=hashlib.sha256(data).hexdigest()
        )
        full.setdefault("created_at", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
        _write_bytes(staging / MANIFEST_FILE, (json.dumps(full, indent=2, sort_keys=True) + "\n").encode())
        _fsync_dir(staging)
        os.rename(staging, final)
        _fsync_dir(model_root)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return final


def promote(models_dir: Path, name: str, version: str) -> None:
    """Points `<name>/CURRENT` at `version` (atomic rename); the version must exist and be complete."""
    _check_segment("name", name)
    _check_segment("version", version)
    root = Path(models_dir) / name
    if not (root / version / MANIFEST_FILE).is_file() or not (root / version / MODEL_FILE).is_file():
        raise FailedPrecondition(f"cannot promote {name} {version}: no complete version at {root / version}")
    tmp = root / f".{CURRENT_FILE}.{os.getpid()}.tmp"
    _write_bytes(tmp, (version + "\n").encode())
    os.replace(tmp, root / CURRENT_FILE)
    _fsync_dir(root)


def current_version(models_dir: Path, name: str) -> str | None:
    """The promoted version of `name`, or None if nothing was promoted yet."""
    try:
        text = (Path(models_dir) / name / CURRENT_FILE).read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    return text or None


def list_versions(models_dir: Path, name: str) -> list[str]:
    """Complete versions of `name`, oldest first (versions sort by time by construction)."""
    root = Path(models_dir) / name
    if not root.is_dir():
        return []
    return sorted(
        p.name
        for p in root.iterdir()
        if p.is_dir() and not p.name.startswith(".") and (p / MANIFEST_FILE).is_file()
    )


def version_dir(models_dir: Path, name: str, version: str | None = None) -> Path:
    """The directory of `version` (default: CURRENT); FailedPrecondition if there is none."""
    _check_segment("name", name)
    if version is None:
        version = current_version(models_dir, name)
        if version is None:
            raise FailedPrecondition(
                f"no promoted version of model {name!r} under {models_dir} (run the trainer)"
            )
    _check_segment("version", version)
    path = Path(models_dir) / name / version
    if not path.is_dir():
        raise FailedPrecondition(f"model {name!r} version {version!r} not found at {path}")
    return path


def read_manifest(models_dir: Path, name: str, version: str | None = None) -> dict[str, Any]:
    path = version_dir(models_dir, name, version) / MANIFEST_FILE
    try:
        manifest: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelMismatch(f"model manifest {path} is unreadable: {exc}") from exc
    return manifest


def stale_promoted(models_dir: Path, expected: Mapping[str, Sequence[str]]) -> dict[str, str]:
    """Promoted models whose feature order is not what this code computes, name → the difference: a
    model an older trainer promoted, which the services would refuse (ModelMismatch) until a retrain.
    Models with nothing promoted are not stale, just absent; an unreadable manifest is stale."""
    stale: dict[str, str] = {}
    for name, features in expected.items():
        if current_version(models_dir, name) is None:
            continue
        try:
            diff = feature_diff(features, read_manifest(models_dir, name).get("features") or [])
        except (ModelMismatch, FailedPrecondition) as exc:
            diff = str(exc)
        if diff:
            stale[name] = diff
    return stale


def feature_diff(expected: Sequence[str], actual: Sequence[str]) -> str:
    """A short human-readable difference between two feature orders ("" if equal)."""
    expected, actual = list(expected), list(actual)
    if expected == actual:
        return ""
    parts: list[str] = [f"expected {len(expected)} features, manifest has {len(actual)}"]
    missing = [f for f in expected if f not in set(actual)]
    extra = [f for f in actual if f not in set(expected)]
    if missing:
        parts.append(f"missing from manifest: {_preview(missing)}")
    if extra:
        parts.append(f"unexpected in manifest: {_preview(extra)}")
    first = next((i for i, (a, b) in enumerate(zip(expected, actual, strict=False)) if a != b), None)
    if first is not None:
        parts.append(
            f"first difference at position {first}: expected {expected[first]!r}, "
            f"manifest has {actual[first]!r}"
        )
    elif not missing and not extra:
        parts.append("same names, different multiplicity")
    return "; ".join(parts)


def _preview(items: Sequence[str], limit: int = 5) -> str:
    shown = ", ".join(repr(i) for i in items[:limit])
    return shown + (f" (+{len(items) - limit} more)" if len(items) > limit else "")


class OnnxModel:
    """One loaded ONNX model: `run(x)` maps (B, F) float32 to the model's single output."""

    def __init__(self, path: Path, manifest: Mapping[str, Any], session: Any) -> None:
        self.path = path
        self.manifest: dict[str, Any] = dict(manifest)
        self.name: str = str(manifest["name"])
        self.version: str = str(manifest["version"])
        self.features: list[str] = list(manifest["features"])
        self._session = session
        self.input_name: str = str(manifest["inputs"][0])
        self.output_name: str = str(manifest["outputs"][0])

    def run(self, x: npt.ArrayLike) -> npt.NDArray[np.float32]:
        arr = np.ascontiguousarray(x, dtype=np.float32)
        if arr.ndim == 1:
            arr = arr[None, :]
        if arr.ndim != 2 or arr.shape[1] != len(self.features):
            raise ValueError(f"{self.name} expects (B, {len(self.features)}) features, got {arr.shape}")
        out = self._session.run([self.output_name], {self.input_name: arr})[0]
        return np.asarray(out, dtype=np.float32)

    @property
    def output_names(self) -> list[str]:
        return [str(o) for o in self.manifest["outputs"]]

    def run_outputs(self, x: npt.ArrayLike) -> dict[str, npt.NDArray[np.float32]]:
        """Every output of the graph by name, from one run (a multi-objective ranker's heads)."""
        arr = np.ascontiguousarray(x, dtype=np.float32)
        if arr.ndim == 1:
            arr = arr[None, :]
        if arr.ndim != 2 or arr.shape[1] != len(self.features):
            raise ValueError(f"{self.name} expects (B, {len(self.features)}) features, got {arr.shape}")
        outs = self._session.run(self.output_names, {self.input_name: arr})
        return {n: np.asarray(o, dtype=np.float32) for n, o in zip(self.output_names, outs, strict=True)}

    def __repr__(self) -> str:
        return f"OnnxModel({self.name!r}, version={self.version!r}, features={len(self.features)})"


def load_model(
    models_dir: Path,
    name: str,
    *,
    expected_features: Sequence[str],
    version: str | None = None,
    intra_op_num_threads: int = 1,
) -> OnnxModel:
    """Loads `name` (CURRENT unless `version`), after checking its hash and its feature order.

    Raises ModelMismatch if the file was changed after export, the manifest is incomplete, or its
    feature order differs from `expected_features` in any way (names, count or order); and
    FailedPrecondition if there is no such model at all.
    """
    directory = version_dir(models_dir, name, version)
    manifest = read_manifest(models_dir, name, directory.name)
    missing = [k for k in REQUIRED_MANIFEST_KEYS if k not in manifest]
    if missing:
        raise ModelMismatch(f"model {name} {directory.name}: manifest lacks {', '.join(missing)}")
    if manifest["name"] != name or manifest["version"] != directory.name:
        raise ModelMismatch(f"model at {directory} claims to be {manifest['name']} {manifest['version']}")
    model_path = directory / str(manifest.get("model_file", MODEL_FILE))
    if not model_path.is_file():
        raise ModelMismatch(f"model {name} {directory.name}: {model_path.name} is missing")
    label = f"model {name} {directory.name}"
    verify_sha256(model_path, str(manifest["sha256"]), label=label)
    diff = feature_diff(expected_features, manifest["features"])
    if diff:
        raise ModelMismatch(f"model {name} {directory.name} was trained on a different feature order: {diff}")

    session = open_session(model_path, manifest, label=label, intra_op_num_threads=intra_op_num_threads)
    width = session.get_inputs()[0].shape[-1]
    if isinstance(width, int) and width != len(expected_features):
        raise ModelMismatch(
            f"model {name} {directory.name}: graph takes {width} features, expected {len(expected_features)}"
        )
    return OnnxModel(model_path, manifest, session)


def verify_sha256(path: Path, expected: str, *, label: str) -> None:
    """Raises ModelMismatch if `path` is not the file the manifest was written for."""
    actual = sha256_file(path)
    if actual != expected:
        raise ModelMismatch(
            f"{label}: {path.name} has sha256 {actual[:16]}…, "
            f"manifest says {expected[:16]}… (file changed after export)"
        )


def open_session(
    model_path: Path, manifest: Mapping[str, Any], *, label: str, intra_op_num_threads: int = 1
) -> Any:
    """An onnxruntime session tuned for a latency-bound service on few cores, whose graph's input and
    output names are checked against the manifest's."""
    import onnxruntime as ort  # imported here: only processes that serve models need it

    options = ort.SessionOptions()
    options.intra_op_num_threads = intra_op_num_threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3
    try:
        session = ort.InferenceSession(
            str(model_path), sess_options=options, providers=["CPUExecutionProvider"]
        )
    except Exception as exc:  # onnxruntime raises its own exception types
        raise ModelMismatch(f"{label}: onnxruntime cannot load it: {exc}") from exc
    inputs = [i.name for i in session.get_inputs()]
    outputs = [o.name for o in session.get_outputs()]
    if inputs != list(manifest["inputs"]) or outputs != list(manifest["outputs"]):
        raise ModelMismatch(
            f"{label}: graph has inputs {inputs} / outputs {outputs}, "
            f"manifest says {manifest['inputs']} / {manifest['outputs']}"
        )
    return session


def npy_bytes(arr: npt.NDArray[Any]) -> bytes:
    """An array as the bytes of a .npy file, for `write_model`'s `extra_files` (read by `load_array`)."""
    import io

    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(arr), allow_pickle=False)
    return buf.getvalue()


def load_array(models_dir: Path, name: str, filename: str, version: str | None = None) -> npt.NDArray[Any]:
    """An extra .npy artefact of a model version (e.g. "creator_embeddings.npy")."""
    return np.load(
        version_dir(models_dir, name, version) / _check_segment("file", filename), allow_pickle=False
    )
