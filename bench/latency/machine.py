"""What the numbers were measured on: CPUs, memory, load, versions."""

from __future__ import annotations

import contextlib
import os
import platform
import tempfile
import time
from importlib import metadata
from pathlib import Path

PACKAGES = ("grpcio", "onnxruntime", "qdrant-edge-py", "implicit", "numpy", "opentelemetry-sdk")


def edge_search_threads() -> int:
    """Threads of qdrant-edge's search pools now running in this process ("edge-search-<n>")."""
    n = 0
    for task in Path(f"/proc/{os.getpid()}/task").iterdir():
        # A thread of a shard closed a moment ago may be gone since the listing.
        with contextlib.suppress(FileNotFoundError):
            n += (task / "comm").read_text().startswith("edge-search")
    return n


def engine_default_search_pool(settle_s: float = 1.0) -> int:
    """The search threads qdrant-edge starts on this machine for a shard opened without a size, counted on
    a throwaway shard (the benchmarks' "before" rows of KINDRED_ENGINE_SEARCH_THREADS open with that many)."""
    import qdrant_edge as qe

    before = edge_search_threads()
    with tempfile.TemporaryDirectory(prefix="kindred-pool-") as tmp:
        vectors = {"v": qe.EdgeVectorParams(size=2, distance=qe.Distance.Cosine)}
        qe.EdgeShard.create(f"{tmp}/shard", qe.EdgeConfig(vectors=vectors)).close()
        shard = qe.EdgeShard.load(f"{tmp}/shard")
        try:
            deadline, seen = time.monotonic() + settle_s, 0
            while time.monotonic() < deadline:  # the pool's threads start asynchronously
                seen = max(seen, edge_search_threads() - before)
                time.sleep(0.05)
            return seen
        finally:
            shard.close()


def cpu_model(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    try:
        for line in cpuinfo.read_text(encoding="utf-8", errors="replace").splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def mem_total_gb(meminfo: Path = Path("/proc/meminfo")) -> float | None:
    try:
        for line in meminfo.read_text(encoding="utf-8").splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024 / 1024, 1)
    except (OSError, ValueError, IndexError):
        pass
    return None


def load_average() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def versions() -> dict[str, str]:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "absent"
    return out


def describe() -> dict[str, object]:
    return {
        "nproc": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "cpu_model": cpu_model(),
        "mem_total_gb": mem_total_gb(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "packages": versions(),
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
