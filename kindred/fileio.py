"""Crash-safe file writes, shared by every writer of manifests, checkpoints and results.

A reader never sees a half-written file: the text goes to a temporary file beside the target (same
filesystem, so the rename is atomic), is flushed and fsynced, then renamed over the target.
"""

from __future__ import annotations

import os
from pathlib import Path


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Writes `data` to `path` atomically, creating the parent directory if needed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def write_text_atomic(path: Path, text: str) -> None:
    """Writes `text` (UTF-8) to `path` atomically, creating the parent directory if needed."""
    write_bytes_atomic(path, text.encode("utf-8"))
