"""In-process A/B of Recommend: this checkout against another source tree, same data, same run.

    python bench/latency/ab_inprocess.py --data-dir D --baseline-tree T [--current-tree T2] [--rounds 10]
                                         [--fans 300] [--chunk 50] [--seed 7] [--json-out F]

Each side is a worker process running `bench.latency.floor.InProcessRecommend` (both servicers, every
message serialised, no transport) from its own tree: this checkout (or --current-tree), and the baseline
tree (e.g. a `git worktree add /tmp/kindred-head HEAD`; the same tree on both sides is an A/A check).
Each worker serves a private copy of the data dir's indexes (an edge shard is locked by the process
that opens it), without the engine search-pool size an earlier opening wrote into them (each side's
code decides it); the rest of the data dir is shared read-only.

1. Fans: like bench/bench_recommend_latency.py, a seeded sample of the fans that follow someone.
2. Warm-up: one pass over the fans per side; its pages (cold caches) are compared side by side.
3. Rounds: per round each side serves every fan once, `--chunk` fans at a time, the two sides taking
   turns chunk by chunk and alternating which goes first (the machine is shared and its speed drifts
   within seconds: only closely interleaved steps compare). Per request: CPU time of the worker
   (time.process_time) and wall time (time.perf_counter); per chunk the sides' CPU ratio, whose
   median is the headline (robust to a chunk that met a busy machine).
4. The pages of a last pass (warm caches) are compared again: items, order, every score, reasons,
   model versions and fallback must be identical; any difference is printed and the exit code is 1.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
COPIED = ("index",)  # locked by the process that opens it: each worker serves its own copy


# ----------------------------------------------------------------------------------------------------
# worker: one side, in its own process


def worker_main(tree: Path, data_dir: Path) -> None:
    """Reads JSON commands on stdin, answers one JSON line each on stdout."""
    sys.path.insert(0, str(tree))
    os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    import ranking_svc
    from bench.latency.floor import InProcessRecommend
    from kindred.service import tune_gc_for_serving

    loaded = Path(ranking_svc.__file__).resolve()
    if not loaded.is_relative_to(tree.resolve()):
        raise SystemExit(f"worker for {tree} imported ranking_svc from {loaded}")
    private = _private_data_dir(data_dir)
    recommend = InProcessRecommend(private)
    tune_gc_for_serving()
    out = sys.stdout
    try:
        _answer(out, {"ready": str(loaded.parent)})
        for line in sys.stdin:
            command = json.loads(line)
            fans = command["fans"]
            if command["op"] == "pages":
                _answer(out, {"pages": [page_of(recommend(f)) for f in fans]})
            elif command["op"] == "round":
                _answer(out, timed_round(recommend, fans))
            else:
                raise SystemExit(f"unknown command {command['op']!r}")
    finally:
        recommend.close()
        shutil.rmtree(private, ignore_errors=True)


def _answer(out: Any, data: dict[str, Any]) -> None:
    out.write(json.dumps(data) + "\n")
    out.flush()


def _private_data_dir(data_dir: Path) -> Path:
    """A temporary data dir: copies of COPIED, symlinks to everything else of `data_dir`."""
    private = Path(tempfile.mkdtemp(prefix="kindred-ab-"))
    for entry in data_dir.iterdir():
        if entry.name in COPIED:
            shutil.copytree(entry, private / entry.name, symlinks=True)
            _forget_search_pools(private / entry.name)
        else:
            (private / entry.name).symlink_to(entry.resolve())
    return private


def _forget_search_pools(root: Path) -> None:
    """Each side opens the copied shards as its own code asks: qdrant-edge writes the search-pool size an
    opening gives (kindred.config.Settings.engine_search_threads) into the shard's edge_config.json and
    applies it to any later opening that gives none — such as a baseline from before that setting."""
    for config in root.rglob("edge_config.json"):
        data = json.loads(config.read_text(encoding="utf-8"))
        if data.pop("max_search_threads", None) is not None:
            config.write_text(json.dumps(data), encoding="utf-8")


def timed_round(recommend: Any, fans: Sequence[str]) -> dict[str, Any]:
    wall: list[float] = []
    cpu0 = time.process_time()
    for fan in fans:
        t0 = time.perf_counter()
        recommend(fan)
        wall.append(time.perf_counter() - t0)
    return {"cpu_s": time.process_time() - cpu0, "wall_s": wall}


def page_of(response: Any) -> dict[str, Any]:
    """Everything a client sees of a RecommendResponse, in a form compared with == (floats exact)."""
    return {
        "ranker": response.ranker.version,
        "retriever": response.retriever.version,
        "fallback": response.fallback,
        "items": [
            {
                "item_id": c.item_id,
                "kind": c.kind,
                "source": c.source,
                "sources": list(c.sources),
                "scores": dict(sorted(c.scores.items())),
                "reasons": list(c.reasons),
            }
            for c in response.items
        ],
    }


# ----------------------------------------------------------------------------------------------------
# parent: drives both workers


class Side:
    def __init__(self, name: str, tree: Path, data_dir: Path) -> None:
        self.name = name
        self.cpu_s = 0.0
        self.wall: list[float] = []
        self._proc = subprocess.Popen(
            [sys.executable, __file__, "--worker", "--tree", str(tree), "--data-dir", str(data_dir)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=tree,
        )
        self.loaded_from = self._read()["ready"]

    def ask(self, op: str, fans: Sequence[str]) -> dict[str, Any]:
        assert self._proc.stdin is not None
        self._proc.stdin.write(json.dumps({"op": op, "fans": list(fans)}) + "\n")
        self._proc.stdin.flush()
        return self._read()

    def _read(self) -> dict[str, Any]:
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline()
        if not line:
            raise SystemExit(f"{self.name} worker exited (code {self._proc.wait()})")
        answer: dict[str, Any] = json.loads(line)
        return answer

    def close(self) -> None:
        if self._proc.stdin is not None:
            self._proc.stdin.close()
        self._proc.wait(timeout=60)


def sample_fans(data_dir: Path, n: int, seed: int) -> list[str]:
    """The latency bench's sample: fans with at least one follow, seeded."""
    from bench.latency.floor import fan_rows

    with open(data_dir / "catalogue" / "fans.jsonl", encoding="utf-8") as fh:
        fan_ids = [str(json.loads(line)["fan_id"]) for line in fh if line.strip()]
    rows = fan_rows(data_dir, fan_ids)
    with_follows = [f for f, r in zip(fan_ids, rows, strict=True) if (r or {}).get("following")]
    return random.Random(seed).sample(with_follows, min(n, len(with_follows)))


def differences(fans: Sequence[str], a: list[dict[str, Any]], b: list[dict[str, Any]]) -> list[str]:
    return [f"{fan}: {pa} != {pb}" for fan, pa, pb in zip(fans, a, b, strict=True) if pa != pb]


def median(values: Sequence[float]) -> float:
    data = sorted(values)
    mid = len(data) // 2
    return data[mid] if len(data) % 2 else 0.5 * (data[mid - 1] + data[mid])


def compare_pages(label: str, fans: Sequence[str], sides: Sequence[Side]) -> list[str]:
    base, new = (side.ask("pages", fans)["pages"] for side in sides)
    diff = differences(fans, base, new)
    print(f"pages ({label}): {len(fans) - len(diff)}/{len(fans)} identical", flush=True)
    return diff


def run(args: argparse.Namespace) -> int:
    from bench.latency.stats import summarize_ms

    data_dir = args.data_dir.resolve()
    fans = sample_fans(data_dir, args.fans, args.seed)
    current = (args.current_tree or REPO).resolve()
    sides = [Side("baseline", args.baseline_tree.resolve(), data_dir), Side("current", current, data_dir)]
    try:
        for side in sides:
            print(f"{side.name}: {side.loaded_from}", flush=True)
        diff = compare_pages("cold caches", fans, sides)
        ratios: list[float] = []
        chunks = [fans[i : i + args.chunk] for i in range(0, len(fans), args.chunk)]
        for r in range(args.rounds):
            for c, chunk in enumerate(chunks):
                cpu = {}
                # Alternate which side goes first; short chunks, so both see about the same machine.
                for side in sides if (r + c) % 2 == 0 else sides[::-1]:
                    got = side.ask("round", chunk)
                    side.cpu_s += got["cpu_s"]
                    side.wall.extend(got["wall_s"])
                    cpu[side.name] = got["cpu_s"]
                ratios.append(cpu["current"] / cpu["baseline"])
            base, new = (s.cpu_s / len(s.wall) for s in sides)
            print(f"after round {r + 1}: CPU/request {base * 1e3:.3f} -> {new * 1e3:.3f} ms", flush=True)
        diff += compare_pages("warm caches", fans, sides)
    finally:
        for side in sides:
            side.close()
    sys.path.insert(0, str(REPO))  # the orchestrator's own tree: its machine description
    from bench.latency import machine

    summary: dict[str, Any] = {
        "command": shlex.join(["python", "bench/latency/ab_inprocess.py", *sys.argv[1:]]),
        "machine": machine.describe(),
        "data_dir": str(data_dir),
        "fans": len(fans),
        "rounds": args.rounds,
        "chunk": args.chunk,
        "cpu_ratio_median": median(ratios),
        "pages_identical": not diff,
    }
    for side in sides:
        wall = summarize_ms(side.wall)
        summary[side.name] = {
            "tree": side.loaded_from,
            "cpu_ms_per_request": side.cpu_s / len(side.wall) * 1e3,
            "wall": wall,
        }
        print(
            f"{side.name}: CPU/request {side.cpu_s / len(side.wall) * 1e3:.3f} ms; "
            f"wall p50 {wall['p50_ms']:.3f} ms, p90 {wall['p90_ms']:.3f} ms, p99 {wall['p99_ms']:.3f} ms"
        )
    print(f"CPU current/baseline: median of {len(ratios)} per-chunk ratios {median(ratios):.3f}")
    if args.json_out:
        args.json_out.write_text(json.dumps(summary, indent=2) + "\n")
    for line in diff[:5]:
        print("DIFFERENT", line)
    return 1 if diff else 0


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", type=Path, required=True, help="a bench platform (generated and trained)")
    p.add_argument("--baseline-tree", type=Path, help="source tree of the 'before' side")
    p.add_argument(
        "--current-tree",
        type=Path,
        default=None,
        help="source tree of the 'after' side (default: this checkout)",
    )
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--fans", type=int, default=300, help="distinct fans, each requested once per round")
    p.add_argument("--chunk", type=int, default=50, help="fans per measured step, the sides alternating")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--json-out", type=Path, default=None)
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--tree", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        worker_main(args.tree, args.data_dir)
        return 0
    if args.baseline_tree is None:
        p.error("--baseline-tree is required")
    return run(args)


if __name__ == "__main__":
    if not __package__:  # run as a script: make the repo root importable (the worker puts its tree first)
        sys.path.insert(1, str(REPO))
    sys.exit(main())
