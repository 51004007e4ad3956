"""The trainer's command line (also behind `kindred train`).

    python -m trainer train --data-dir var/demo [--config tiny|default|path.toml] [--seed 7] [--force-promote]
    python -m trainer search-tune --data-dir var/demo [--epochs 2] [--force-promote]   (trainer.search_tuning)

A run promotes its models only if the promotion gate finds them not worse than the current ones on the
hold-out (trainer.promotion); `--force-promote` overrides a rejection, and promotion.json records it.

Settings come from KINDRED_* environment variables like every other process (the online store backend,
the vector backend, the models directory); `--data-dir` overrides KINDRED_DATA_DIR.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from kindred.config import Settings


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="trainer", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="ingest → features → two-tower → ranker → evaluate → export → index")
    train.add_argument(
        "--data-dir", type=Path, default=None, help="data directory (default: KINDRED_DATA_DIR)"
    )
    train.add_argument("--config", default="default", help="tiny | default | path to a .toml file")
    train.add_argument("--seed", type=int, default=None, help="overrides the config's seed")
    train.add_argument("--version", default=None, help="artefact version (default: UTC time + random suffix)")
    train.add_argument(
        "--force-promote",
        action="store_true",
        help="promote even if the gate rejects the new models (recorded in promotion.json)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["search-tune"]:  # search logs → query encoder + fusion; its own options
        from trainer.search_tuning import main as search_tune

        return search_tune(argv[1:])
    args = build_parser().parse_args(argv)
    from trainer.config import load_config

    try:
        cfg = load_config(args.config)
    except (FileNotFoundError, ValueError) as exc:
        print(f"trainer: {exc}", file=sys.stderr)
        return 2
    if args.seed is not None:
        cfg = cfg.replace(seed=args.seed)
    settings = Settings.from_env()
    if args.data_dir is not None:
        settings = settings.replace(data_dir=args.data_dir)
    if not (Path(settings.data_dir) / "catalogue").is_dir():
        print(
            f"trainer: no catalogue under {settings.data_dir} (run `kindred generate` first)", file=sys.stderr
        )
        return 2

    from trainer.pipeline import NotEnoughData, run

    try:
        report = run(settings, cfg, version=args.version, force_promote=args.force_promote)
    except NotEnoughData as exc:
        print(f"trainer: not enough data: {exc}", file=sys.stderr)
        return 1
    decision = report.promotion or {}
    print(
        f"[train] done: version {report.version}, {decision.get('decision', 'not promoted')}"
        + (" (forced)" if decision.get("forced") else "")
    )
    return 0
