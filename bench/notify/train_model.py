"""Trains and promotes `notify_outcomes` for the demo / a local notify_svc, from a simulated outcome log.

    .venv/bin/python -m bench.notify.train_model --models-dir var/data/models [--fans 1500] [--days 30]

There is no production outcome log on one machine, so this runs the simulator's randomised logging
policy (bench/notify, the same protocol as step 1 of bench/bench_notify_sim.py), optionally writes
the log (`--log`, the JSONL `python -m trainer.notify_models` reads), then trains, exports and
promotes with trainer/notify_models.py. notify_svc serves the learned policy on its next start when
`<models dir>/notify_outcomes/CURRENT` exists (KINDRED_MODELS_DIR, default <data dir>/models).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Sequence
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

from bench.notify.policies import LoggingAgent, memberships, relationships
from bench.notify.sim import Simulation
from bench.notify.world import WorldConfig, make_world


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models-dir", type=Path, required=True)
    parser.add_argument("--fans", type=int, default=1500)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--seed", type=int, default=100)
    parser.add_argument("--version", default=None)
    parser.add_argument("--log", type=Path, default=None, help="also write the outcome log here (JSONL)")
    args = parser.parse_args(argv)

    import torch

    from trainer.notify_log import write_log
    from trainer.notify_models import train_notify_models

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    world = make_world(args.seed, WorldConfig(fans=args.fans, days=args.days))
    agent = LoggingAgent(world, args.seed, relationships(world))
    sim = Simulation(world, agent, args.seed, progress=True)
    agent.truth, agent.disabled_fans = sim.truth, sim.disabled  # as bench_notify_sim.Runner.run wires it
    sim.run()
    members = memberships(world)
    print(f"[train_model] simulated {len(agent.events)} outcome events in {time.perf_counter() - t0:.0f} s")
    if args.log is not None:
        args.log.parent.mkdir(parents=True, exist_ok=True)
        write_log(args.log, agent.events, members)
    result = train_notify_models(
        agent.events, members, args.models_dir, version=args.version or f"sim-seed{args.seed}"
    )
    metrics = {k: round(v, 4) for k, v in result.metrics.items()}
    print(json.dumps({"version": result.version, "rows": result.rows, "directory": str(result.directory),
                      "holdout": metrics}, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
