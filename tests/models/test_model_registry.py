"""kindred.models: versioned writes, CURRENT pointers, and a loader that refuses what it must not serve.

The ONNX graphs here are built with onnx.helper (y = x·W, a linear scorer), so these tests need
neither torch nor a trained model.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from kindred.errors import FailedPrecondition, ModelMismatch  # noqa: E402
from kindred.models import (  # noqa: E402
    current_version,
    feature_diff,
    list_versions,
    load_array,
    load_model,
    promote,
    read_manifest,
    stale_promoted,
    write_model,
)

FEATURES = ["a", "b", "c"]


def linear_onnx(weights: list[float], *, input_name: str = "features", output_name: str = "score") -> bytes:
    """(B, F) float32 → (B,) = x · w."""
    w = numpy_helper.from_array(np.asarray(weights, dtype=np.float32).reshape(-1, 1), "w")
    axes = numpy_helper.from_array(np.array([1], dtype=np.int64), "axes")
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", [input_name, "w"], ["y"]),
            helper.make_node("Squeeze", ["y", "axes"], [output_name]),
        ],
        "linear",
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, ["batch", len(weights)])],
        [helper.make_tensor_value_info(output_name, TensorProto.FLOAT, ["batch"])],
        initializer=[w, axes],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 10
    onnx.checker.check_model(model)
    return model.SerializeToString()


def manifest(features: list[str] = FEATURES) -> dict[str, object]:
    return {
        "inputs": ["features"],
        "outputs": ["score"],
        "features": features,
        "opset": 18,
        "data_window": {"start": 0.0, "end": 1.0},
        "metrics": {"ndcg@10": 0.5},
    }


def test_write_promote_load_and_run(tmp_path: Path) -> None:
    path = write_model(
        tmp_path,
        "ranker",
        "v1",
        linear_onnx([1.0, 2.0, 3.0]),
        manifest(),
        extra_files={"extra.npy": _npy(np.arange(4, dtype=np.float32))},
    )
    assert (path / "model.onnx").is_file()
    assert current_version(tmp_path, "ranker") is None
    promote(tmp_path, "ranker", "v1")
    assert current_version(tmp_path, "ranker") == "v1"

    model = load_model(tmp_path, "ranker", expected_features=FEATURES)
    assert (model.name, model.version) == ("ranker", "v1")
    assert model.manifest["metrics"] == {"ndcg@10": 0.5}
    out = model.run(np.array([[1, 0, 0], [0, 1, 1]], dtype=np.float32))
    np.testing.assert_allclose(out, [1.0, 5.0])
    assert model.run(np.array([0, 0, 1], dtype=np.float32)).shape == (1,)  # one row is a batch of one
    np.testing.assert_array_equal(load_array(tmp_path, "ranker", "extra.npy"), np.arange(4))


def test_manifest_is_completed_with_hash_and_identity(tmp_path: Path) -> None:
    data = linear_onnx([1.0, 1.0, 1.0])
    write_model(tmp_path, "ranker", "v1", data, manifest())
    m = read_manifest(tmp_path, "ranker", "v1")
    import hashlib

    assert m["sha256"] == hashlib.sha256(data).hexdigest()
    assert (m["name"], m["version"], m["model_file"]) == ("ranker", "v1", "model.onnx")
    assert "created_at" in m


def test_versions_are_immutable_and_listed_in_order(tmp_path: Path) -> None:
    for v in ("20250101-000000-aaaa", "20250102-000000-bbbb"):
        write_model(tmp_path, "ranker", v, linear_onnx([1.0, 1.0, 1.0]), manifest())
    with pytest.raises(FileExistsError):
        write_model(tmp_path, "ranker", "20250101-000000-aaaa", linear_onnx([2.0, 2.0, 2.0]), manifest())
    assert list_versions(tmp_path, "ranker") == ["20250101-000000-aaaa", "20250102-000000-bbbb"]
    assert not [p for p in (tmp_path / "ranker").iterdir() if p.name.startswith(".")]  # no staging left


def test_load_refuses_a_different_feature_order(tmp_path: Path) -> None:
    write_model(tmp_path, "ranker", "v1", linear_onnx([1.0, 2.0, 3.0]), manifest(["a", "c", "b"]))
    promote(tmp_path, "ranker", "v1")
    with pytest.raises(ModelMismatch, match=r"position 1: expected 'b', manifest has 'c'"):
        load_model(tmp_path, "ranker", expected_features=FEATURES)


def test_load_refuses_missing_and_extra_features(tmp_path: Path) -> None:
    write_model(tmp_path, "ranker", "v1", linear_onnx([1.0, 2.0, 3.0]), manifest(["a", "b", "z"]))
    with pytest.raises(ModelMismatch) as err:
        load_model(tmp_path, "ranker", expected_features=FEATURES, version="v1")
    assert "missing from manifest: 'c'" in str(err.value)
    assert "unexpected in manifest: 'z'" in str(err.value)


def test_load_refuses_a_tampered_file(tmp_path: Path) -> None:
    path = write_model(tmp_path, "ranker", "v1", linear_onnx([1.0, 2.0, 3.0]), manifest())
    promote(tmp_path, "ranker", "v1")
    # Same size, same structure, different weights: only the hash can tell.
    (path / "model.onnx").write_bytes(linear_onnx([9.0, 2.0, 3.0]))
    with pytest.raises(ModelMismatch, match="sha256"):
        load_model(tmp_path, "ranker", expected_features=FEATURES)


def test_load_refuses_an_incomplete_manifest(tmp_path: Path) -> None:
    path = write_model(tmp_path, "ranker", "v1", linear_onnx([1.0, 2.0, 3.0]), manifest())
    m = json.loads((path / "manifest.json").read_text())
    del m["features"]
    (path / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ModelMismatch, match="lacks features"):
        load_model(tmp_path, "ranker", expected_features=FEATURES, version="v1")


def test_load_refuses_io_names_that_differ_from_the_graph(tmp_path: Path) -> None:
    bad = manifest()
    bad["outputs"] = ["embedding"]
    write_model(tmp_path, "ranker", "v1", linear_onnx([1.0, 2.0, 3.0]), bad)
    with pytest.raises(ModelMismatch, match="outputs"):
        load_model(tmp_path, "ranker", expected_features=FEATURES, version="v1")


def test_no_promoted_version_is_a_failed_precondition(tmp_path: Path) -> None:
    with pytest.raises(FailedPrecondition, match="no promoted version"):
        load_model(tmp_path, "ranker", expected_features=FEATURES)
    with pytest.raises(FailedPrecondition):
        promote(tmp_path, "ranker", "v9")


def test_run_rejects_the_wrong_width(tmp_path: Path) -> None:
    write_model(tmp_path, "ranker", "v1", linear_onnx([1.0, 2.0, 3.0]), manifest())
    model = load_model(tmp_path, "ranker", expected_features=FEATURES, version="v1")
    with pytest.raises(ValueError, match=r"\(B, 3\)"):
        model.run(np.zeros((2, 4), dtype=np.float32))


@pytest.mark.parametrize("bad", ["../escape", "", "a/b", ".hidden"])
def test_names_and_versions_cannot_escape_the_models_dir(tmp_path: Path, bad: str) -> None:
    with pytest.raises(ValueError):
        write_model(tmp_path, "ranker", bad, linear_onnx([1.0]), manifest(["a"]))
    with pytest.raises(ValueError):
        write_model(tmp_path, bad, "v1", linear_onnx([1.0]), manifest(["a"]))


def test_feature_diff_is_empty_only_for_equal_orders() -> None:
    assert feature_diff(["a", "b"], ["a", "b"]) == ""
    longer = feature_diff(["a", "b"], ["a", "b", "b"])
    assert "expected 2 features, manifest has 3" in longer
    assert "same names, different multiplicity" in longer
    assert "position 2: expected 'a', manifest has 'b'" in feature_diff(["a", "b", "a"], ["a", "b", "b"])


def _npy(arr: np.ndarray) -> bytes:
    import io

    buf = io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()


def test_stale_promoted_names_promoted_models_trained_on_another_feature_order(tmp_path: Path) -> None:
    write_model(tmp_path, "ranker", "v1", linear_onnx([1.0, 2.0]), manifest(["a", "b"]))
    promote(tmp_path, "ranker", "v1")
    write_model(tmp_path, "tower", "v1", linear_onnx([1.0, 2.0, 3.0]), manifest(FEATURES))
    promote(tmp_path, "tower", "v1")
    write_model(tmp_path, "unpromoted", "v1", linear_onnx([1.0]), manifest(["z"]))
    expected = {"ranker": FEATURES, "tower": FEATURES, "unpromoted": FEATURES, "absent": FEATURES}
    stale = stale_promoted(tmp_path, expected)
    assert list(stale) == ["ranker"] and "missing from manifest: 'c'" in stale["ranker"]
    write_model(tmp_path, "ranker", "v2", linear_onnx([1.0, 2.0, 3.0]), manifest(FEATURES))
    promote(tmp_path, "ranker", "v2")  # retrained: no longer stale
    assert stale_promoted(tmp_path, expected) == {}


def test_served_model_features_are_what_the_services_load_with() -> None:
    from kindred.features import RANKER_FEATURES, SERVED_MODEL_FEATURES, USER_TOWER_FEATURES
    from retrieval_svc.server import USER_TOWER

    assert SERVED_MODEL_FEATURES == {"ranker": RANKER_FEATURES, USER_TOWER: USER_TOWER_FEATURES}
