"""The serving side of models and features must not drag the trainer's stack into a service process."""

from __future__ import annotations

import subprocess
import sys


def test_features_and_models_import_neither_torch_nor_ray() -> None:
    code = (
        "import sys, kindred.features, kindred.models\n"
        "heavy = sorted(m for m in ('torch', 'ray', 'onnx', 'pyarrow') if m in sys.modules)\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == ""
