"""The Last.fm harness's plumbing: per-seed parts (one process per seed on shared cores) merged by system."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest


def write_part(tmp_path: Path, name: str, rows: dict[int, dict[str, Any]], wall: float, cpu: float) -> Path:
    path = tmp_path / name
    payload = {"command": f"run {name}", "seeds": list(rows), "per_seed": list(rows.values())}
    path.write_text(json.dumps(payload | {"runtime_seconds": wall, "cpu_seconds": cpu}))
    return path


def test_parts_merge_in_seed_order_with_the_longest_wall_time(tmp_path: Path) -> None:
    from bench.bench_recsys_lastfm import load_parts

    def part(name: str, seeds: list[int], wall: float, cpu: float) -> Path:
        return write_part(tmp_path, name, {s: {"popularity": {"seed_marker": s}} for s in seeds}, wall, cpu)

    merged = load_parts([part("b", [2], 50.0, 30.0), part("a", [0, 1], 80.0, 60.0)])
    assert merged.seeds == [0, 1, 2]
    assert [r["popularity"]["seed_marker"] for r in merged.per_seed] == [0, 1, 2]
    assert [r["popularity"]["run"] for r in merged.per_seed] == ["run a", "run a", "run b"]
    assert (merged.runtime, merged.cpu_seconds) == (80.0, 90.0)
    assert merged.commands == ["run b", "run a"]
    assert merged.replaced == []
    with pytest.raises(ValueError, match="same run given twice"):
        load_parts([part("c", [1], 1.0, 1.0), part("c", [1], 1.0, 1.0)])


def test_a_later_part_replaces_only_its_systems_rows_and_says_so(tmp_path: Path) -> None:
    from bench.bench_recsys_lastfm import load_parts

    peers = write_part(
        tmp_path, "all", {s: {"itemknn": {"v": s}, "kindred": {"v": -1}} for s in (0, 1)}, 90.0, 80.0
    )
    kindred = [write_part(tmp_path, f"k{s}", {s: {"kindred": {"v": 10 + s}}}, 30.0, 20.0) for s in (0, 1)]
    merged = load_parts([peers, *kindred])
    assert [r["itemknn"]["v"] for r in merged.per_seed] == [0, 1]  # peers stay the measured ones
    assert [r["kindred"]["v"] for r in merged.per_seed] == [10, 11]
    assert [r["kindred"]["run"] for r in merged.per_seed] == ["run k0", "run k1"]
    assert merged.replaced == ["seed 0 kindred: run all -> run k0", "seed 1 kindred: run all -> run k1"]
    # A seed left without a system the others have cannot be aggregated.
    lone = write_part(tmp_path, "lone", {2: {"kindred": {"v": 12}}}, 1.0, 1.0)
    with pytest.raises(ValueError, match="different systems"):
        load_parts([peers, lone])


def test_reused_systems_carry_params_but_refuse_to_score(tmp_path: Path) -> None:
    from bench.bench_recsys_lastfm import reused_systems

    row = {"params": {"factors": 64}, "valid_ndcg@10": 0.2}
    part = write_part(tmp_path, "p", {3: {"implicit_als": row, "popularity": row}}, 1.0, 1.0)
    done = reused_systems(part, 3, {"implicit_als"})
    assert list(done) == ["implicit_als"]
    assert done["implicit_als"].params == {"factors": 64}
    assert done["implicit_als"].valid["ndcg@10"] == 0.2
    with pytest.raises(RuntimeError, match="not run here"):
        done["implicit_als"].model.score(np.arange(2))
    with pytest.raises(ValueError, match="no seed 4"):
        reused_systems(part, 4, {"implicit_als"})


def test_rows_added_to_a_results_file_keep_the_others_and_replacements_are_listed() -> None:
    from bench.bench_recsys_lastfm import add_systems

    def entry(v: float, run: str | None = None) -> dict[str, Any]:
        rows = [{"seed": s, "ndcg@10": v} | ({"run": run} if run else {}) for s in (0, 1)]
        return {"ndcg@10": v, "per_seed": rows}

    report = {"seeds": [0, 1], "systems": {"itemknn": entry(0.18, "peers")}, "replaced_rows": []}
    first = add_systems(report, {"kindred_services": entry(0.10)}, [0, 1], "run A", 5.0)
    assert first["systems"]["itemknn"] == report["systems"]["itemknn"]  # untouched
    assert [r["run"] for r in first["systems"]["kindred_services"]["per_seed"]] == ["run A", "run A"]
    assert first["replaced_rows"] == [] and [r["command"] for r in first["added_rows"]] == ["run A"]
    second = add_systems(first, {"kindred_services": entry(0.15)}, [0, 1], "run B", 5.0)
    assert second["systems"]["kindred_services"]["ndcg@10"] == 0.15
    date_a, date_b = first["added_rows"][0]["date"], second["added_rows"][0]["date"]
    assert second["replaced_rows"] == [
        f"seed {s} kindred_services: run A ({date_a}) -> run B ({date_b})" for s in (0, 1)
    ]
    assert [r["command"] for r in second["added_rows"]] == ["run B"]
    with pytest.raises(ValueError, match="seeds"):
        add_systems(report, {"x": entry(0.1)}, [0], "run C", 1.0)
