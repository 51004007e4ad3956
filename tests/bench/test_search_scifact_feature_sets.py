"""Which document evidence Kindred's SciFact fusion reads, and the ablation refits beside it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kindred.text.fusion import DOC_FEATURES, ENCODED_DOC_FEATURES, SENT_MAX, SENT_TOP2, TITLE_DENSE


def inputs(**kw: Any) -> Any:
    from bench.search.tuned import FoldInputs
    from trainer.search_tuning import TuneConfig

    def no_features(qid: str, union: Any) -> dict[str, dict[str, float]]:
        return {}

    base: dict[str, Any] = dict(
        ids=[],
        queries={},
        qrels={},
        doc_emb=None,
        base_hits={},
        dense_search=lambda v: [],
        rescore=lambda q, v, u: {},
        doc_encoder=None,
        models_dir=Path("."),
        cfg=TuneConfig(),
        cache_dir=Path("."),
        fusion_kinds=("linear",),
        doc_features=no_features,
    )
    return FoldInputs(**{**base, **kw})


def test_text_evidence_only_with_titles_and_sentences_available() -> None:
    from bench.search.tuned import NO_DOC_FEATURES, WITH_ENCODED, WITH_SENTENCES, WITH_TITLE_DENSE

    inp = inputs(available_encoded=ENCODED_DOC_FEATURES)
    assert inp.ranker_extra == DOC_FEATURES
    assert inp.diagnostic_extras() == {
        NO_DOC_FEATURES: (),
        WITH_TITLE_DENSE: (*DOC_FEATURES, TITLE_DENSE),
        WITH_SENTENCES: (*DOC_FEATURES, SENT_MAX, SENT_TOP2),
        WITH_ENCODED: (*DOC_FEATURES, *ENCODED_DOC_FEATURES),
    }


def test_encoded_evidence_read_adds_the_text_only_ablation() -> None:
    from bench.search.tuned import NO_DOC_FEATURES, TEXT_DOC_FEATURES, WITH_TITLE_DENSE

    inp = inputs(encoded_features=(SENT_MAX, SENT_TOP2), available_encoded=ENCODED_DOC_FEATURES)
    assert inp.ranker_extra == (*DOC_FEATURES, SENT_MAX, SENT_TOP2)
    assert inp.diagnostic_extras() == {
        NO_DOC_FEATURES: (),
        TEXT_DOC_FEATURES: DOC_FEATURES,
        WITH_TITLE_DENSE: (*DOC_FEATURES, SENT_MAX, SENT_TOP2, TITLE_DENSE),
    }


def test_no_document_evidence_no_ablations() -> None:
    inp = inputs(doc_features=None, encoded_features=(TITLE_DENSE,))
    assert inp.ranker_extra == ()
    assert inp.diagnostic_extras() == {}


def test_alternative_system_reads_the_other_evidence_set() -> None:
    from bench.search.tuned import ENCODED_CV, TEXT_CV

    assert inputs(available_encoded=ENCODED_DOC_FEATURES).alternative_extras() == {
        ENCODED_CV: (*DOC_FEATURES, *ENCODED_DOC_FEATURES)
    }
    reads = inputs(encoded_features=(TITLE_DENSE,), available_encoded=ENCODED_DOC_FEATURES)
    assert reads.alternative_extras() == {TEXT_CV: DOC_FEATURES}
    assert inputs().alternative_extras() == {}  # no encoded evidence stored: nothing to compare


def test_tuned_evidence_gets_its_own_refit_when_the_bench_rescores_it() -> None:
    """The bench-only diagnostic: title and sentence vectors scored by the tuned query vector."""
    from bench.search.tuned import TEXT_DOC_FEATURES, TUNED_DOC_FEATURES, WITH_ENCODED, WITH_TUNED_EVIDENCE

    reads = (TITLE_DENSE, SENT_MAX)
    inp = inputs(encoded_features=reads, available_encoded=(*ENCODED_DOC_FEATURES, *TUNED_DOC_FEATURES))
    extras = inp.diagnostic_extras()
    assert extras[WITH_TUNED_EVIDENCE] == (*DOC_FEATURES, *reads, *TUNED_DOC_FEATURES)
    assert extras[WITH_ENCODED] == (*DOC_FEATURES, *reads, SENT_TOP2, *TUNED_DOC_FEATURES)
    assert extras[TEXT_DOC_FEATURES] == DOC_FEATURES
    assert WITH_TUNED_EVIDENCE not in inputs(available_encoded=ENCODED_DOC_FEATURES).diagnostic_extras()


def test_the_fusion_kind_is_chosen_over_the_configured_number_of_inner_folds(
    tmp_path: Path, monkeypatch: Any
) -> None:
    """`--fusion-folds` reaches select_fusion (fit_fold stops there: the cross-fitted examples are cached)."""
    import json
    from types import SimpleNamespace

    import pytest

    import bench.search.tuned as tuned

    inp = inputs(
        doc_encoder=SimpleNamespace(manifest={"sha256": "test"}),
        cache_dir=tmp_path,
        qrels={"q1": {"d1": 1}},
        doc_features=None,
        fusion_folds=5,
    )
    version = f"scifact-{tuned.fold_tag(['q1'], inp)}-f1"
    example = {"hits": {"bm25": [["d1", 1.0]]}, "relevance": {"d1": 1.0}, "rescored": {}}
    (tmp_path / "crossfit").mkdir()
    (tmp_path / "crossfit" / f"{version}.json").write_text(json.dumps({"examples": [example], "inner": []}))
    seen: dict[str, int] = {}

    class Chosen(Exception):
        pass

    def choose(examples: Any, kinds: Any, *, folds: int, **kw: Any) -> Any:
        seen["folds"] = folds
        raise Chosen

    monkeypatch.setattr(tuned, "select_fusion", choose)
    with pytest.raises(Chosen):
        tuned.fit_fold("f1", ["q1"], inp, log=lambda _: None)
    assert seen == {"folds": 5}
    assert inputs().fusion_folds == 3  # the committed runs' choice


def test_fewer_than_two_fusion_folds_is_refused(capsys: Any) -> None:
    import pytest

    from bench.bench_search_scifact import parse_args

    assert parse_args(["--fusion-folds", "5"]).fusion_folds == 5
    with pytest.raises(SystemExit):
        parse_args(["--fusion-folds", "1"])
    assert "--fusion-folds must be at least 2" in capsys.readouterr().err
