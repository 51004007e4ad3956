"""The `kindred` command: generate data, train, serve, call the mesh, run the demo.

kindred generate --fans 2000 --creators 300 --days 30 --seed 7 --data-dir var/demo
kindred train --data-dir var/demo
kindred serve ranking|retrieval|notify|events
kindred recommend --fan f000001 [-k 10] [--target 127.0.0.1:50052]
kindred demo
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

SERVICES = {
    "retrieval": "retrieval_svc.server",
    "ranking": "ranking_svc.server",
    "notify": "notify_svc.server",
    "events": "events_svc.server",
}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="kindred", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)

    from kindred.data.generate import add_generate_arguments

    add_generate_arguments(sub.add_parser("generate", help="generate a deterministic creator platform"))

    sub.add_parser("train", help="run the Ray training pipeline (see `kindred train --help`)", add_help=False)

    serve = sub.add_parser("serve", help="run one service in the foreground (settings from KINDRED_* env)")
    serve.add_argument("service", choices=sorted(SERVICES))

    rec = sub.add_parser("recommend", help="ask the running ranking service for a fan's recommendations")
    rec.add_argument("--fan", required=True, help="fan id, e.g. f000001")
    rec.add_argument("-k", type=int, default=10)
    rec.add_argument("--target", default=None, help="ranking service address (default from settings)")
    rec.add_argument("--timeout", type=float, default=2.0, help="deadline in seconds")

    from kindred.demo import add_demo_arguments

    add_demo_arguments(sub.add_parser("demo", help="generate → train → index → serve the whole mesh"))

    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["train"]:
        # The trainer owns its options; hand them over untouched (argparse.REMAINDER drops leading flags).
        from trainer.cli import main as train_main

        sys.exit(train_main(argv))
    args = parser.parse_args(argv)
    if args.command == "generate":
        from kindred.data.generate import run_generate

        sys.exit(run_generate(args))
    elif args.command == "serve":
        importlib.import_module(SERVICES[args.service]).main()
    elif args.command == "recommend":
        sys.exit(_recommend(args))
    elif args.command == "demo":
        from kindred.demo import run_demo

        sys.exit(run_demo(args))


def _recommend(args: argparse.Namespace) -> int:
    import grpc

    from kindred.config import Settings
    from kindred.grpc_client import make_channel
    from kindred.v1 import common_pb2, ranking_pb2, ranking_pb2_grpc

    settings = Settings.from_env()
    with make_channel(args.target or settings.resolved_ranking_target) as channel:
        stub = ranking_pb2_grpc.RankingServiceStub(channel)
        try:
            response = stub.Recommend(
                ranking_pb2.RecommendRequest(fan_id=args.fan, k=args.k), timeout=args.timeout
            )
        except grpc.RpcError as exc:
            print(f"error: {exc.code().name}: {exc.details()}", file=sys.stderr)
            return 1
    versions = f"ranker {response.ranker.version}, retriever {response.retriever.version}"
    print(f"recommendations for {args.fan} ({versions})")
    if response.fallback:
        print(f"  served by fallback: {response.fallback}")
    for rank, item in enumerate(response.items, 1):
        source = common_pb2.CandidateSource.Name(item.source).removeprefix("CANDIDATE_SOURCE_").lower()
        score = item.scores.get("final", 0.0)
        reason = item.reasons[0] if item.reasons else ""
        print(f"{rank:>3}. {item.item_id:<12} score {score:+.4f}  via {source:<10} {reason}")
    return 0
