"""The `kindred` command: generate data, train, serve, call the mesh, run the demo.

kindred generate --fans 2000 --creators 300 --days 30 --seed 7 --data-dir var/demo
kindred train --data-dir var/demo
kindred serve ranking|retrieval|notify|events
kindred recommend --fan f000001 [-k 10] [--target 127.0.0.1:50052]
kindred index [--data-dir var/demo] [--batch-size 256] [--rebuild] [--encoded-evidence]
kindred search "watercolor palette" [--fan f000001] [-k 10]
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

    idx = sub.add_parser(
        "index",
        help="bulk-index the catalogue for search (resumable; run while retrieval is stopped)",
    )
    idx.add_argument("--data-dir", default=None, help="data directory (default: KINDRED_DATA_DIR)")
    idx.add_argument("--batch-size", type=int, default=256, help="documents encoded per batch")
    idx.add_argument("--limit-posts", type=int, default=None, help="index only the first N posts")
    idx.add_argument("--rebuild", action="store_true", help="delete the search index and start over")
    idx.add_argument("--no-progress", action="store_true", help="no progress bar")
    idx.add_argument(
        "--encoded-evidence",
        action="store_true",
        help="a new index also stores title and sentence vectors for a fusion that reads them "
        "(title_dense, sent_max, sent_top2): ~10 more texts to encode per item",
    )

    find = sub.add_parser("search", help="ask the running ranking service to search (SearchRanked)")
    find.add_argument("query")
    find.add_argument("--fan", default="", help="fan id, for personalised results")
    find.add_argument("-k", type=int, default=10)
    find.add_argument("--target", default=None, help="ranking service address (default from settings)")
    find.add_argument("--timeout", type=float, default=2.0, help="deadline in seconds")

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
    elif args.command == "index":
        sys.exit(_index(args))
    elif args.command == "search":
        sys.exit(_search(args))
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


def _index(args: argparse.Namespace) -> int:
    import os
    from pathlib import Path

    from kindred.config import Settings
    from kindred.data.catalogue import Catalogue
    from kindred.errors import FailedPrecondition
    from kindred.text.encoder import TextEncoder
    from retrieval_svc.search.bulk import bulk_index, catalogue_docs
    from retrieval_svc.search.index import search_index_root

    env = dict(os.environ)
    if args.data_dir:
        env["KINDRED_DATA_DIR"] = str(Path(args.data_dir).resolve())
    settings = Settings.from_env(env)
    try:
        encoder = TextEncoder.from_registry(settings.resolved_models_dir, intra_op_num_threads=2)
    except FailedPrecondition as exc:
        print(
            f"error: {exc}\n  export one: python -m trainer.text_encoder export --out "
            f"{settings.resolved_models_dir} --promote",
            file=sys.stderr,
        )
        return 1
    catalogue = Catalogue.load(settings.data_dir)
    if args.limit_posts is not None:
        catalogue.posts = catalogue.posts[: args.limit_posts]
    docs = catalogue_docs(catalogue)
    root = search_index_root(settings)
    print(
        f"indexing {len(catalogue.creators)} creators and {len(catalogue.posts)} posts into {root} "
        f"with text encoder {encoder.version}"
    )
    report = bulk_index(
        root,
        docs,
        encoder,
        batch_size=args.batch_size,
        rebuild=args.rebuild,
        progress=not args.no_progress,
        encoded_evidence=args.encoded_evidence,
    )
    print(
        f"done: {report.points} items searchable; encoded {report.encoded} this run "
        f"({report.resumed_from} already indexed) in {report.seconds:.1f} s ({report.docs_per_s:.0f} docs/s)"
    )
    return 0


def _search(args: argparse.Namespace) -> int:
    import grpc

    from kindred.config import Settings
    from kindred.grpc_client import make_channel
    from kindred.v1 import ranking_pb2, ranking_pb2_grpc

    settings = Settings.from_env()
    with make_channel(args.target or settings.resolved_ranking_target) as channel:
        stub = ranking_pb2_grpc.RankingServiceStub(channel)
        try:
            response = stub.SearchRanked(
                ranking_pb2.SearchRankedRequest(query=args.query, fan_id=args.fan, k=args.k),
                timeout=args.timeout,
            )
        except grpc.RpcError as exc:
            print(f"error: {exc.code().name}: {exc.details()}", file=sys.stderr)
            return 1
    mode = "personalised" if response.personalised else "not personalised"
    print(f"{len(response.items)} results for {args.query!r} ({mode}; encoder {response.encoder.version})")
    for rank, item in enumerate(response.items, 1):
        detail = response.details[item.item_id]
        title = detail.title[:40]
        reasons = "; ".join(item.reasons[:3])
        print(f"{rank:>3}. {item.item_id:<10} {title:<40} {item.scores.get('final', 0.0):.3f}  {reasons}")
    return 0
