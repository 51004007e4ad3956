"""trainer.search_tuning: search logs joined from the event log, exact retrieval, folds, and (slow) the
whole job — tune, export, gate — on a small generated platform with the real MiniLM, torch and ONNX."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from kindred.text.fusion import FitExample, FusionModel, ranker_feature_names
from kindred.text.tokenize import Bm25, bm25_scores
from kindred.v1 import events_pb2
from trainer.search_tuning import (
    DOC_FEATURES,
    DOC_LEN,
    ExactRetrievers,
    TrainingQueries,
    example_features,
    fit_fusion,
    fused_ndcg,
    monotone_directions,
    search_log,
    select_fusion,
    shared_document_groups,
    split_groups,
)

ET = events_pb2.EventType


def event(
    i: int, etype: events_pb2.EventType, t: int, query: str = "", creator: str = "", post: str = ""
) -> events_pb2.Event:
    ev = events_pb2.Event(
        event_id=f"e{i}", type=etype, fan_id="f1", creator_id=creator, post_id=post, query=query
    )
    ev.occurred_at.seconds = t
    return ev


def test_search_log_joins_clicks_by_query() -> None:
    events = [
        event(1, ET.EVENT_TYPE_SEARCH, 10, "cake  recipes"),
        event(2, ET.EVENT_TYPE_SEARCH_CLICK, 12, "cake recipes", creator="c1"),
        event(3, ET.EVENT_TYPE_SEARCH_CLICK, 30, "cake recipes", creator="c1", post="p9"),  # the post counts
        event(4, ET.EVENT_TYPE_SEARCH_CLICK, 5, "synth", creator="c2"),
        event(5, ET.EVENT_TYPE_FOLLOW, 6, "", creator="c3"),  # not a search click
        event(6, ET.EVENT_TYPE_SEARCH_CLICK, 7, "  ", creator="c4"),  # no query: nothing to learn
        event(7, ET.EVENT_TYPE_SEARCH_CLICK, 40, " synth ", creator="c5"),
    ]
    log = search_log(events)
    assert log.queries == ["synth", "cake recipes"]  # ordered by first click
    assert log.clicked == [{"creator:c2", "creator:c5"}, {"creator:c1", "post:p9"}]
    assert log.first_click == [5.0, 12.0]


def test_exact_bm25_matches_the_reference_and_dense_is_cosine_order() -> None:
    texts = ["vegan cake recipes", "cake", "synth bass lessons", "bass fishing trips and cake", ""]
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(len(texts), 8)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    retr = ExactRetrievers.build(texts, emb)
    ref = bm25_scores("cake bass", texts, Bm25.fit(texts))
    got = dict(retr.bm25_hits("cake bass", 10))
    assert set(got) == {i for i, s in enumerate(ref) if s > 0}
    for i, s in got.items():
        assert s == pytest.approx(ref[i])
    q = emb[2] + 0.1 * emb[0]
    q /= np.linalg.norm(q)
    order = [d for d, _ in retr.dense_hits(q, 3)]
    assert order[0] == 2 and order == list(np.argsort(-(emb @ q))[:3])
    # Union rescoring: exactly the asked candidates, the same numbers the retrievers rank by.
    again = retr.rescored("cake bass", q, emb[0], ["0", "2", "4"])
    assert set(again["bm25"]) == {str(d) for d in (0, 2) if ref[d] > 0}  # doc 4 shares no term
    assert again["bm25"]["0"] == pytest.approx(ref[0])
    assert again["dense"]["2"] == pytest.approx(float(emb[2] @ q), abs=1e-6)
    assert again["dense_tuned"]["0"] == pytest.approx(1.0, abs=1e-6)


def first_item_relevant(q: int, scores: dict[str, np.ndarray]) -> FitExample:
    """Query `q`'s example: each retriever's top 20 of its scores over the same items, every item
    rescored, the first item the relevant one."""
    docs = [f"q{q}d{i}" for i in range(len(next(iter(scores.values()))))]
    hits = {r: [(docs[i], float(v[i])) for i in np.argsort(-v)[:20]] for r, v in scores.items()}
    rescored = {r: {d: float(v[i]) for i, d in enumerate(docs)} for r, v in scores.items()}
    return FitExample(hits, {docs[0]: 1.0}, rescored)


def lexical_trap_examples(n: int, seed: int) -> list[FitExample]:
    """The relevant document wins on a product of two signals (BM25 high *and* tuned dense high): a tree
    ranker can learn the interaction, a weighted sum of the two only approximates it."""
    rng = np.random.default_rng(seed)
    out = []
    for q in range(n):
        bm = rng.normal(size=40)
        tu = rng.normal(size=40)
        base = rng.normal(size=40)
        bm[:8] += 2.5  # lexical traps: high BM25, unrelated topic
        tu[8:16] += 2.5  # topical traps: on topic, not the claim
        bm[0] += 0.5
        tu[0] += 3.0  # the relevant one: both
        scores = {"bm25": bm, "dense": base, "dense_tuned": tu}
        out.append(first_item_relevant(q, scores))
    return out


def test_select_fusion_picks_by_inner_cv_and_the_choice_holds_on_unseen_queries() -> None:
    train, held = lexical_trap_examples(150, seed=0), lexical_trap_examples(150, seed=1)
    choice = select_fusion(train, ["linear", "lambdarank"], folds=3, ranker_rounds=60, log=lambda _: None)
    assert set(choice.cv_ndcg) == {"linear", "lambdarank"}
    assert choice.kind == max(choice.cv_ndcg, key=lambda k: choice.cv_ndcg[k])
    assert choice.chosen.kind == choice.kind and choice.chosen.info["kind"] == choice.kind
    alone = select_fusion(train, ["linear"], log=lambda _: None).chosen
    assert fused_ndcg(choice.chosen, held) >= fused_ndcg(alone, held) - 0.01
    with pytest.raises(ValueError):
        select_fusion(train, ["forest"])
    # Nothing to hold out with one fold: refused by name, not an obscure failure of an empty fit.
    with pytest.raises(ValueError, match="at least 2 folds"):
        select_fusion(train, ["linear", "lambdarank"], folds=1)
    assert select_fusion(train, ["linear"], folds=1, log=lambda _: None).kind == "linear"  # no choice made


def test_ranker_kinds_take_rounds_and_a_linear_base() -> None:
    train = lexical_trap_examples(60, seed=2)
    short = fit_fusion(train, "lambdarank:5")
    assert short.kind == "lambdarank" and short.info["rounds"] == 5
    # Boosted from the linear fusion: the graph adds the linear score back (fit checks ONNX == LightGBM).
    boosted = fit_fusion(train, "lambdarank_on_linear:10")
    assert boosted.info["boosted_from"].startswith("FusionModel(") and boosted.rescore
    held = lexical_trap_examples(60, seed=3)
    assert fused_ndcg(boosted, held) > 0.3
    for bad in (
        "linear:5",
        "lambdarank:0",
        "lambdarank:many",
        "lambdarank:5x0",
        "lambdarank:5xy",
        "linear:5x2",
    ):
        with pytest.raises(ValueError):
            fit_fusion(train, bad)


def test_the_xendcg_kind_trains_with_its_own_objective_and_learns_the_interaction() -> None:
    """xendcg[:rounds[xbags]]: the lambdarank kind's trees under LightGBM's rank_xendcg loss, served the
    same way (one ONNX graph, checked against LightGBM at fit)."""
    train, held = lexical_trap_examples(150, seed=0), lexical_trap_examples(150, seed=1)
    listwise = fit_fusion(train, "xendcg:60x2")
    assert listwise.kind == "lambdarank" and listwise.ranker is not None
    assert listwise.info["objective"].startswith("rank_xendcg") and listwise.info["boosters"] == 2
    assert fit_fusion(train, "lambdarank:60").info["objective"].startswith("lambdarank")
    linear = fit_fusion(train, "linear")
    assert fused_ndcg(listwise, held) > fused_ndcg(linear, held)
    for bad in ("xendcg:0", "xendcg:5xy"):
        with pytest.raises(ValueError):
            fit_fusion(train, bad)


def spam_trap_examples(n: int, seed: int) -> list[FitExample]:
    """Relevance falls as BM25 rises past a point: the items with the very highest BM25 are keyword
    spam, never relevant; the relevant one has a fairly high BM25 and a high dense score."""
    rng = np.random.default_rng(seed)
    out = []
    for q in range(n):
        bm = rng.normal(size=40)
        dense = rng.normal(size=40)
        bm[:6] += 4.0  # spam
        bm[0] = 1.5 + 0.3 * rng.normal()
        dense[0] += 1.5
        scores = {"bm25": bm, "dense": dense, "dense_tuned": dense + 0.1 * rng.normal(size=40)}
        out.append(first_item_relevant(q, scores))
    return out


def _order_violations(model: FusionModel, examples: list[FitExample]) -> int:
    """Items whose score drops when one of the columns monotone_directions constrains is raised (the
    others held): what a monotone ranker never does."""
    assert model.ranker is not None
    readers = model.ranker.retrievers
    x = np.concatenate([example_features(ex, readers, model.rrf_k)[1] for ex in examples])
    base = model.ranker.score(x)
    violations = 0
    for j, direction in enumerate(monotone_directions(readers)):
        if direction:
            raised = x.copy()
            raised[:, j] += np.float32(0.5 * (x[:, j].std() + 1e-3))
            violations += int((model.ranker.score(raised) < base - 1e-6).sum())
    return violations


def test_the_monotone_kind_never_scores_an_item_lower_for_a_higher_retrieval_score() -> None:
    """lambdarank_mono: the same trees under monotone constraints. On data where the highest BM25 is spam,
    free trees learn to punish BM25 (the check finds it), constrained ones cannot; length is left free."""
    train = spam_trap_examples(150, seed=0)
    held = spam_trap_examples(40, seed=1)
    free = fit_fusion(train, "lambdarank:60")
    mono = fit_fusion(train, "lambdarank_mono:60x2")
    assert mono.info["monotone"] is True and free.info["monotone"] is False
    assert mono.info["boosters"] == 2 and mono.info["objective"].startswith("lambdarank")
    assert _order_violations(free, held) > 0
    assert _order_violations(mono, held) == 0
    readers = ("bm25", DOC_LEN)
    directions = dict(zip(ranker_feature_names(readers), monotone_directions(readers), strict=True))
    assert directions["bm25:raw"] == directions["bm25:rrf"] == 1
    assert directions["bm25:top"] == directions["bm25:listed"] == 0
    assert not any(v for k, v in directions.items() if k.startswith(f"{DOC_LEN}:"))
    with pytest.raises(ValueError):
        fit_fusion(train, "lambdarank_mono:0")


def test_fused_ndcg_reads_memoised_features_the_second_time(monkeypatch: pytest.MonkeyPatch) -> None:
    import trainer.search_tuning as st

    train, held = doc_feature_examples(40, seed=8), doc_feature_examples(10, seed=9)
    model = fit_fusion(train, "lambdarank:20", ranker_extra=DOC_FEATURES)
    first = fused_ndcg(model, held)

    def rebuilt(*_a: object, **_k: object) -> None:
        raise AssertionError("features rebuilt: the memo was not used")

    monkeypatch.setattr(st, "ranker_features", rebuilt)
    assert fused_ndcg(model, held) == first


def test_a_bag_of_boosters_serves_their_mean_as_one_graph() -> None:
    """lambdarank:<rounds>x<bags>: one ONNX ensemble of every booster's trees (leaves / bags); the fit
    checks the graph against the mean of LightGBM's own scores (raises beyond 1e-4)."""
    from kindred.text.fusion import ranker_features, rescore_union, union_of

    train, held = lexical_trap_examples(60, seed=2), lexical_trap_examples(40, seed=3)
    one = fit_fusion(train, "lambdarank_on_linear:20")
    bag = fit_fusion(train, "lambdarank_on_linear:20x3")
    assert bag.info["boosters"] == 3 and one.info["boosters"] == 1
    assert bag.ranker is not None and one.ranker is not None
    assert bag.ranker.retrievers == one.ranker.retrievers
    ex = held[0]
    docs = union_of(ex.hits, bag.ranker.retrievers)
    lists = rescore_union(ex.hits, ex.rescored, bag.ranker.retrievers) if ex.rescored else ex.hits
    x = ranker_features(ex.hits, lists, docs, bag.ranker.retrievers, bag.rrf_k)
    assert not np.allclose(bag.ranker.score(x), one.ranker.score(x))  # seeds 1 and 2 add their own trees
    assert fused_ndcg(bag, held) > 0.3


def test_a_bag_over_several_round_counts_holds_one_booster_per_count_and_seed() -> None:
    """lambdarank_mono:<r1>+<r2>x<bags>: every bag a booster per round count, each its own seed, the
    graph their mean (checked against LightGBM inside the fit); a bag of one count keeps its seeds."""
    import lightgbm as lgb

    trained: list[int] = []
    seeds: list[int] = []
    real_train = lgb.train

    def counting(params: dict[str, object], data: object, num_boost_round: int) -> object:
        trained.append(num_boost_round)
        seeds.append(int(params["seed"]))  # type: ignore[call-overload]
        return real_train(params, data, num_boost_round=num_boost_round)  # type: ignore[arg-type]

    train, held = lexical_trap_examples(60, seed=2), lexical_trap_examples(40, seed=3)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(lgb, "train", counting)
        mixed = fit_fusion(train, "lambdarank_mono:10+20x2")
        assert (trained, seeds) == ([10, 20, 10, 20], [0, 1, 2, 3])
        trained.clear(), seeds.clear()
        fit_fusion(train, "lambdarank_mono:10x2")
        assert (trained, seeds) == ([10, 10], [0, 1])
    assert mixed.info["boosters"] == 4 and mixed.info["rounds"] == [10, 20]
    assert fused_ndcg(mixed, held) > 0.3
    for bad in ("lambdarank_mono:10+x2", "lambdarank:+10", "lambdarank:10+0", "linear:10+20"):
        with pytest.raises(ValueError, match="rounds"):
            fit_fusion(train, bad)


def doc_feature_examples(n: int, seed: int) -> list[FitExample]:
    """Retrievers cannot tell the relevant document from 5 look-alikes; only a document feature
    (present in `rescored` alone: no hit list of its own) can."""
    rng = np.random.default_rng(seed)
    out = []
    for q in range(n):
        docs = [f"q{q}d{i}" for i in range(30)]
        bm = rng.normal(size=30)
        bm[:6] += 3.0
        scores = {"bm25": bm, "dense": rng.normal(size=30), "dense_tuned": rng.normal(size=30)}
        hits = {r: [(docs[i], float(v[i])) for i in np.argsort(-v)[:20]] for r, v in scores.items()}
        rescored: dict[str, dict[str, float]] = {
            r: {d: float(v[i]) for i, d in enumerate(docs)} for r, v in scores.items()
        }
        length = rng.uniform(3.0, 6.0, size=30)
        length[0] = 2.0  # the relevant one: short
        rescored[DOC_LEN] = {d: float(length[i]) for i, d in enumerate(docs)}
        out.append(FitExample(hits, {docs[0]: 1.0}, rescored))
    return out


def test_a_ranker_reads_document_features_as_rescored_only_retrievers(tmp_path: Path) -> None:
    train, held = doc_feature_examples(120, seed=4), doc_feature_examples(80, seed=5)
    plain = fit_fusion(train, "lambdarank:60")
    with_docs = fit_fusion(train, "lambdarank:60", ranker_extra=DOC_FEATURES)
    assert with_docs.ranker is not None and DOC_LEN in with_docs.ranker.retrievers
    assert plain.ranker is not None and DOC_LEN not in plain.ranker.retrievers
    assert fused_ndcg(with_docs, held) > fused_ndcg(plain, held) + 0.2
    # Served from its files; absent features (here three of the four) read as constant, never fail.
    path = tmp_path / "fusion.json"
    with_docs.save(path)
    loaded = FusionModel.load(path)
    assert fused_ndcg(loaded, held) == pytest.approx(fused_ndcg(with_docs, held))
    linear = fit_fusion(train, "linear", ranker_extra=DOC_FEATURES)
    assert DOC_LEN not in linear.retrievers  # linear kinds read the retrievers' lists only


def test_fused_ndcg_of_a_ranker_is_the_served_fuse_per_example() -> None:
    """fused_ndcg scores a pure ranker from memoised features: every example's NDCG must equal the one of
    FusionModel.fuse, the served call (a different feature order or tie rule would break this)."""
    from trainer.search_tuning import ndcg_at

    train, held = doc_feature_examples(60, seed=6), doc_feature_examples(25, seed=7)
    for kind in ("lambdarank:30", "lambdarank_on_linear:30"):
        model = fit_fusion(train, kind, ranker_extra=DOC_FEATURES)
        assert model.ranker is not None and not model.terms and model.rescore
        for ex in held:
            served = [h.doc_id for h in model.fuse(ex.hits, rescored=ex.rescored)]
            assert fused_ndcg(model, [ex]) == ndcg_at(served, ex.relevance)


def test_folds_keep_queries_that_share_a_clicked_document_together() -> None:
    queries = TrainingQueries(
        texts=["a", "b", "c", "d", "e"],
        positives=[[1], [1, 2], [2], [3], [4]],
        relevance=[{1: 1.0}, {1: 1.0, 2: 1.0}, {2: 1.0}, {3: 1.0}, {4: 1.0}],
    )
    groups = shared_document_groups(queries)
    assert groups[0] == groups[1] == groups[2] and len({groups[0], groups[3], groups[4]}) == 3
    folds = split_groups(5, 2, seed=0, groups=groups)
    assert sorted(r for f in folds for r in f) == [0, 1, 2, 3, 4]
    where = {r: i for i, f in enumerate(folds) for r in f}
    assert where[0] == where[1] == where[2]


@pytest.mark.slow
@pytest.mark.timeout(1800)  # two tunings + three ONNX exports: ~10 min on the shared 2 cores under load
def test_search_tune_job_exports_gates_and_refuses_a_worse_encoder(tmp_path: Path) -> None:
    # The whole job on a small generated platform: real events, real MiniLM (torch → ONNX), real gate.
    from kindred.data.generate import generate_platform
    from kindred.models import current_version
    from kindred.text.encoder import TextEncoder
    from kindred.text.fusion import FusionModel
    from trainer.search_tuning import FUSION_FILE, QUERY_ENCODER_NAME, TuneConfig, run_search_tune

    data = tmp_path / "data"
    generate_platform(data, fans=120, creators=30, days=8, seed=5, progress=False)
    models = tmp_path / "models"
    cfg = TuneConfig(epochs=1, inner_folds=2, threads=2)
    first = run_search_tune(
        data,
        models,
        cfg,
        version="v1",
        fusion_kinds=("linear", "lambdarank"),
        doc_features=True,
        log=lambda _: None,
    )

    directory = models / QUERY_ENCODER_NAME / "v1"
    manifest = json.loads((directory / "manifest.json").read_text())
    doc_encoder = TextEncoder.from_registry(models)
    assert manifest["role"] == "query"
    assert manifest["document_encoder"]["sha256"] == doc_encoder.manifest["sha256"]
    assert manifest["training"]["data"]["training_queries"] > 20
    assert manifest["parity"]["max_abs_diff"] <= 1e-4
    fusion = FusionModel.load(directory / FUSION_FILE)  # the fusion ships with the encoder
    assert fusion.retrievers and fusion.kind == fusion.info["kind"]
    assert set(fusion.info["selection"]["inner_cv_ndcg@10"]) == {"linear", "lambdarank"}
    if fusion.kind == "lambdarank":
        assert (directory / "fusion.onnx").is_file()
        assert set(DOC_FEATURES) <= set(fusion.retrievers)  # --doc-features reached the ranker
    _serve_the_tuned_side(data, models, directory)
    record = json.loads((directory / "promotion.json").read_text())
    assert record == first.record and record["current"]["model"].startswith("base text_encoder")
    base, new = record["current"]["metrics"], record["new"]["metrics"]
    if record["decision"] == "promoted":
        assert new["ndcg@10"] >= base["ndcg@10"] and new["recall@10"] >= base["recall@10"]
        assert current_version(models, QUERY_ENCODER_NAME) == "v1"

    # A learning rate 250x too high wrecks the query encoder: the gate must keep what was there.
    before = current_version(models, QUERY_ENCODER_NAME)
    worse = run_search_tune(
        data, models, TuneConfig(epochs=1, inner_folds=2, lr=5e-3), version="v2", log=print
    )
    assert worse.record["decision"] == "rejected", worse.record["reason"]
    assert worse.record["new"]["metrics"]["ndcg@10"] < worse.record["current"]["metrics"]["ndcg@10"]
    assert current_version(models, QUERY_ENCODER_NAME) == before
    assert (models / QUERY_ENCODER_NAME / "v2" / "model.onnx").is_file()  # kept on disk, not promoted


def test_exact_document_evidence_matches_what_the_index_stores() -> None:
    from kindred.text.fusion import COVERAGE, TITLE_BM25

    texts = ["Vegan cake recipes for spring", "cake", "synth bass lessons", "bass fishing trips and cake"]
    titles = ["Vegan cake", "", "Synth lessons", "Fishing"]
    emb = np.eye(4, 8, dtype=np.float32)
    retr = ExactRetrievers.build(texts, emb, titles=titles)
    ev = retr.doc_evidence("vegan cake lessons", ["0", "1", "2", "3"])
    # IDF over the titles that have terms (the engine counts points holding the vector)
    ref = bm25_scores("vegan cake lessons", [t for t in titles if t], Bm25.fit(titles))
    assert set(ev[TITLE_BM25]) == {"0", "2"} and ev[TITLE_BM25]["0"] == pytest.approx(ref[0])
    assert ev[COVERAGE] == pytest.approx({"0": 2 / 3, "1": 1 / 3, "2": 1 / 3, "3": 1 / 3})
    assert ev[DOC_LEN]["1"] == pytest.approx(np.log1p(1.0)) and ev[DOC_LEN]["0"] > ev[DOC_LEN]["1"]
    assert ExactRetrievers.build(texts, emb).doc_evidence("cake", ["0"]) == {}


def test_the_tuner_learns_on_exactly_the_texts_and_titles_the_index_serves(tmp_path: Path) -> None:
    from kindred.data.catalogue import Catalogue
    from kindred.data.generate import generate_platform
    from retrieval_svc.search.bulk import catalogue_docs
    from retrieval_svc.search.documents import TITLE_KEY
    from trainer.search_tuning import catalogue_documents, catalogue_titles

    generate_platform(tmp_path, fans=20, creators=6, days=2, seed=3, progress=False)
    catalogue = Catalogue.load(tmp_path)
    served = catalogue_docs(catalogue)
    keys, texts = catalogue_documents(catalogue)
    assert keys == [f"{d.kind}:{d.item_id}" for d in served] and texts == [d.text for d in served]
    assert catalogue_titles(catalogue) == [str(d.payload.get(TITLE_KEY) or "") for d in served]
    assert any(k.startswith("creator:") for k in keys) and any(k.startswith("post:") for k in keys)


def _serve_the_tuned_side(data: Path, models: Path, directory: Path) -> None:
    """The job's output, served: the platform bulk-indexed with the document encoder (document evidence
    stored), the tuned query side loaded the way retrieval loads it; a logged query finds what the
    fans clicked, and a fusion that reads document evidence gets it from the index."""
    from kindred.data.catalogue import Catalogue
    from kindred.eventlog import EventLog
    from kindred.text.encoder import TextEncoder
    from retrieval_svc.search.bulk import bulk_index, catalogue_docs
    from retrieval_svc.search.index import SearchFilter, SearchIndex
    from retrieval_svc.search.query import HybridSearcher, QuerySide
    from trainer.search_tuning import load_query_side, search_log

    doc_encoder = TextEncoder.from_registry(models)
    root = data / "search_index"
    bulk_index(root, catalogue_docs(Catalogue.load(data)), doc_encoder, progress=False, log=lambda _: None)
    encoder, fusion = load_query_side(models, directory.name)
    index = SearchIndex.open(root)
    try:
        assert index.doc_evidence
        searcher = HybridSearcher(index, doc_encoder, query_side=QuerySide(encoder, fusion))
        with EventLog(data / "events") as elog:
            slog = search_log(elog.read())
        found = 0
        for query, clicked in list(zip(slog.queries, slog.clicked, strict=True))[:20]:
            hits = searcher.search(query, 10, SearchFilter()).hits
            assert hits
            found += any(f"{h.kind}:{h.item_id}" in clicked for h in hits)
            if set(DOC_FEATURES) <= set(fusion.retrievers):
                assert all(DOC_LEN in h.scores for h in hits)
        assert found >= 10, f"only {found} of 20 logged queries find a clicked document in the top 10"
    finally:
        index.close()


def test_exact_encoded_evidence_is_the_title_and_sentence_cosines() -> None:
    from kindred.errors import InvalidArgument
    from kindred.text.fusion import SENT_MAX, SENT_TOP2, TITLE_DENSE
    from retrieval_svc.search.index import EncodedEvidence
    from trainer.search_tuning import build_parser, check_encoded_features

    e = np.eye(4, dtype=np.float32)
    encoded = EncodedEvidence(
        titles=[e[0], None],  # the second document has no title: no title cosine, as in the index
        sentences=[np.stack([e[0], e[1], (e[1] + e[2]) / np.sqrt(2)]), e[3:4]],
    )
    retr = ExactRetrievers.build(["a b", "c"], e[:2], encoded=encoded)
    q = np.array([0.6, 0.8, 0.0, 0.0], dtype=np.float32)
    ev = retr.doc_evidence("a", ["0", "1"], q)
    assert ev[TITLE_DENSE] == pytest.approx({"0": 0.6})
    assert ev[SENT_MAX] == pytest.approx({"0": 0.8, "1": 0.0})
    assert ev[SENT_TOP2] == pytest.approx({"0": 0.7, "1": 0.0})  # mean of 0.8 and 0.6; one sentence: itself
    assert retr.doc_evidence("a", ["0"]) == {}  # no base query vector: nothing encoded to score
    assert check_encoded_features(["sent_max", "title_dense", "sent_max"]) == ("sent_max", "title_dense")
    with pytest.raises(InvalidArgument) as err:
        check_encoded_features(["title_dense", "sent_min"])
    assert err.value.field == "encoded_features"
    args = build_parser().parse_args(["--encoded-features", "title_dense,sent_top2"])
    assert args.encoded_features == ("title_dense", "sent_top2")
    assert build_parser().parse_args([]).encoded_features == ()
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--encoded-features", "sent_min"])
