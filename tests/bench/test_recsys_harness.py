"""The Last.fm harness's plumbing: per-seed parts (one process per seed on shared cores) merged."""

from __future__ import annotations

import json
from pathlib import Path

import pytest


def test_parts_merge_in_seed_order_with_the_longest_wall_time(tmp_path: Path) -> None:
    from bench.bench_recsys_lastfm import load_parts

    def part(name: str, seeds: list[int], wall: float, cpu: float) -> Path:
        path = tmp_path / name
        rows = [{"popularity": {"seed_marker": s}} for s in seeds]
        payload = {"command": f"run {name}", "seeds": seeds, "per_seed": rows}
        path.write_text(json.dumps(payload | {"runtime_seconds": wall, "cpu_seconds": cpu}))
        return path

    seeds, rows, wall, cpu, commands = load_parts([part("b", [2], 50.0, 30.0), part("a", [0, 1], 80.0, 60.0)])
    assert seeds == [0, 1, 2]
    assert [r["popularity"]["seed_marker"] for r in rows] == [0, 1, 2]
    assert (wall, cpu) == (80.0, 90.0)
    assert commands == ["run b", "run a"]
    with pytest.raises(ValueError, match="repeat a seed"):
        load_parts([part("c", [1], 1.0, 1.0), part("d", [1], 1.0, 1.0)])
