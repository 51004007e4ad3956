"""Private copies of an index directory for replica processes.

A qdrant-edge shard is locked by the one process that opens it, so several processes serving the same
index (search replicas, co-located ranking replicas) each open a copy of their own. A copy is made whole
or not at all: it is built beside its final place and renamed into it, and one cut short is made again.
Nothing may write the source while it is copied.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable
from pathlib import Path

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")


def check_replica_name(name: str, *, what: str = "replica") -> str:
    """A replica's name names its copy's directory (and, for search replicas, its log entry): no path
    separators, no leading dot."""
    if not _NAME.fullmatch(name):
        raise ValueError(
            f"{what} name {name!r}: 1-63 letters, digits, '_', '.', '-', starting with a letter or digit"
        )
    return name


def copy_once(base: Path, root: Path, *, prepare: Callable[[Path], None] | None = None) -> Path:
    """`root`, copied from `base` on first use (an empty directory if `base` does not exist); `prepare`
    runs on the copy before it takes its place."""
    if root.exists():
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    partial = root.parent / f".{root.name}.copying"
    shutil.rmtree(partial, ignore_errors=True)
    if base.is_dir():
        shutil.copytree(base, partial)
    else:
        partial.mkdir()
    if prepare is not None:
        prepare(partial)
    partial.rename(root)  # whole or absent
    return root
