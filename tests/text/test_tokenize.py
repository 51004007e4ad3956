"""kindred.text.tokenize: normalisation, terms, stable hashing, BM25 weights — and BM25 inside qdrant-edge.

The last test indexes a tiny corpus in a real qdrant-edge shard with Modifier.Idf and checks that the
engine's scores are exactly textbook BM25 (our saturated TF × the engine's IDF), which is the whole point
of splitting the formula between this module and the engine.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kindred.text.tokenize import (
    Bm25,
    SparseTerms,
    TokenizerConfig,
    bm25_scores,
    idf,
    normalize,
    porter_stem,
    s_stem,
    sparse_from_weights,
    term_index,
    tokenize,
)


def test_normalize_nfkc_and_casefold() -> None:
    assert normalize("ＦＵＬＬ　ｗｉｄｔｈ") == "full width"  # full-width forms and ideographic space
    assert normalize("Straße") == "strasse"  # casefold, not lower
    assert normalize("ﬁne") == "fine"  # ligature
    assert normalize("İstanbul") == "istanbul"  # no stray combining dot
    assert normalize("Café", fold_accents=True) == "cafe"
    assert normalize("Café") == "café"


def test_tokenize_punctuation_stopwords_and_case() -> None:
    assert tokenize("The IL-6 levels, in 1,024 patients (p<0.05)!") == [
        "il",
        "6",
        "level",
        "1",
        "024",
        "patient",
        "p",
        "0",
        "05",
    ]
    assert tokenize("snake_case and CamelCase", TokenizerConfig(stemmer="none")) == [
        "snake",
        "case",
        "camelcase",
    ]
    assert tokenize("the of and") == []
    assert tokenize("") == []


def test_tokenize_possessive_cjk_and_length_limits() -> None:
    plain = TokenizerConfig(stemmer="none")
    assert tokenize("Alzheimer's disease", plain) == ["alzheimer", "disease"]
    assert tokenize("Alzheimer’s", plain) == ["alzheimer"]
    assert tokenize("東京タワー") == ["東", "京", "タ", "ワ", "ー"]
    assert tokenize("x" * 41 + " ok") == ["ok"]
    cfg = TokenizerConfig(stopwords=frozenset(), stemmer="none")
    assert tokenize("The cells", cfg) == ["the", "cells"]
    assert tokenize("Relational studies of cells") == ["relat", "studi", "cell"]  # Porter by default
    with pytest.raises(ValueError):
        TokenizerConfig(stemmer="lancaster")


@pytest.mark.parametrize(
    ("word", "stem"),
    [
        ("studies", "study"),
        ("cells", "cell"),
        ("glasses", "glasse"),
        ("virus", "virus"),
        ("class", "class"),
        ("series", "sery"),
        ("shoes", "shoe"),
        ("bus", "bus"),
        ("a1s", "a1s"),
        ("its", "its"),
        ("proteins", "protein"),
    ],
)
def test_s_stemmer_rules(word: str, stem: str) -> None:
    # "series" → "sery" is what Harman's rules say: kept, predictable beats clever for an index format.
    assert s_stem(word) == stem


PORTER_CASES = [
    "caresses",
    "caress",
    "ponies",
    "poni",
    "ties",
    "ti",
    "cats",
    "cat",
    "feed",
    "feed",
    "agreed",
    "agre",
    "plastered",
    "plaster",
    "bled",
    "bled",
    "motoring",
    "motor",
    "sing",
    "sing",
    "conflated",
    "conflat",
    "troubled",
    "troubl",
    "sized",
    "size",
    "hopping",
    "hop",
    "tanned",
    "tan",
    "falling",
    "fall",
    "hissing",
    "hiss",
    "fizzed",
    "fizz",
    "failing",
    "fail",
    "filing",
    "file",
    "happy",
    "happi",
    "sky",
    "sky",
    "relational",
    "relat",
    "conditional",
    "condit",
    "rational",
    "ration",
    "valenci",
    "valenc",
    "digitizer",
    "digit",
    "conformabli",
    "conform",
    "radicalli",
    "radic",
    "vietnamization",
    "vietnam",
    "predication",
    "predic",
    "operator",
    "oper",
    "feudalism",
    "feudal",
    "decisiveness",
    "decis",
    "hopefulness",
    "hope",
    "callousness",
    "callous",
    "formaliti",
    "formal",
    "sensibiliti",
    "sensibl",
    "triplicate",
    "triplic",
    "formative",
    "form",
    "formalize",
    "formal",
    "electriciti",
    "electr",
    "electrical",
    "electr",
    "goodness",
    "good",
    "revival",
    "reviv",
    "allowance",
    "allow",
    "inference",
    "infer",
    "airliner",
    "airlin",
    "gyroscopic",
    "gyroscop",
    "adjustable",
    "adjust",
    "defensible",
    "defens",
    "irritant",
    "irrit",
    "replacement",
    "replac",
    "adjustment",
    "adjust",
    "dependent",
    "depend",
    "adoption",
    "adopt",
    "communism",
    "commun",
    "activate",
    "activ",
    "angulariti",
    "angular",
    "effective",
    "effect",
    "bowdlerize",
    "bowdler",
    "probate",
    "probat",
    "rate",
    "rate",
    "cease",
    "ceas",
    "controlling",
    "control",
    "generalization",
    "gener",
    "ab",
    "ab",
    "naïve",
    "naïve",
]


@pytest.mark.parametrize(("word", "stem"), list(zip(PORTER_CASES[::2], PORTER_CASES[1::2], strict=True)))
def test_porter_stemmer_matches_the_published_vocabulary(word: str, stem: str) -> None:
    # Pairs from Porter's published test vocabulary (output of the reference implementation).
    assert porter_stem(word) == stem


def test_term_index_is_stable_across_processes_and_in_range() -> None:
    terms = ["cell", "protein", "東", "naïveté"]
    ours = [term_index(t) for t in terms]
    assert all(0 <= i < 2**31 for i in ours)
    assert len(set(ours)) == len(ours)
    code = (
        "from kindred.text.tokenize import term_index; "
        f"print(' '.join(str(term_index(t)) for t in {terms!r}))"
    )
    for seed in ("1", "12345"):  # a different hash seed would change hash(), never term_index
        env = {**os.environ, "PYTHONHASHSEED": seed}
        out = subprocess.run(
            [sys.executable, "-c", code],
            env=env,
            capture_output=True,
            text=True,
            check=True,
            cwd=Path(__file__).resolve().parents[2],
        )
        assert [int(x) for x in out.stdout.split()] == ours


def test_term_index_golden_values() -> None:
    # Pinned: changing the hash silently invalidates every sparse index ever built.
    assert term_index("cell") == 499529315
    assert term_index("protein") == 663710193


def test_sparse_from_weights_sorted_and_merged() -> None:
    sv = sparse_from_weights({"b": 1.0, "a": 2.0, "c": 0.5})
    assert list(sv.indices) == sorted(sv.indices)
    assert sv.as_dict() == {term_index("a"): 2.0, term_index("b"): 1.0, term_index("c"): 0.5}
    with pytest.raises(ValueError):
        SparseTerms((1, 2), (1.0,))


def test_bm25_document_weights_match_the_formula() -> None:
    model = Bm25(k1=1.2, b=0.75, avg_len=4.0, tokenizer=TokenizerConfig(stemmer="none"))
    w = model.document_weights("cell cell cell protein membrane kinase")  # 6 terms, cell tf 3
    norm = 1.2 * (1 - 0.75 + 0.75 * 6 / 4.0)
    assert w["cell"] == pytest.approx(3 * 2.2 / (3 + norm))
    assert w["protein"] == pytest.approx(1 * 2.2 / (1 + norm))
    assert set(w) == {"cell", "protein", "membrane", "kinase"}
    assert Bm25(b=0.0, avg_len=4.0, tokenizer=TokenizerConfig(stemmer="none")).document_weights(
        "cell x y z q r"
    )["cell"] == pytest.approx(1.9 / (1 + 0.9))


def test_bm25_query_has_unit_weights_once_per_term() -> None:
    model = Bm25()
    q = model.query("Cells, cells and more CELLS!")
    assert q.as_dict() == {term_index("cell"): 1.0, term_index("more"): 1.0}
    assert len(model.query("the of")) == 0


def test_bm25_fit_measures_average_length() -> None:
    assert Bm25.fit(["a cell", "two proteins here", "the"]).avg_len == pytest.approx((1 + 3 + 0) / 3)
    with pytest.raises(ValueError):
        Bm25(b=1.5)


def test_idf_formula() -> None:
    assert idf(10, 3) == pytest.approx(math.log(1 + 7.5 / 3.5))
    assert idf(10, 10) > 0  # Lucene's +1 keeps a ubiquitous term non-negative


def test_qdrant_edge_idf_modifier_gives_textbook_bm25(tmp_path: Path) -> None:
    qe = pytest.importorskip("qdrant_edge")
    docs = [
        "Vitamin D deficiency and multiple sclerosis risk in cohort studies.",
        "Vitamin C supplementation does not prevent the common cold.",
        "Multiple sclerosis lesions imaged by magnetic resonance imaging.",
        "Protein folding in the endoplasmic reticulum under stress.",
        "Cold stress and protein misfolding: a vitamin-independent pathway in cells and cells.",
    ]
    model = Bm25.fit(docs)
    config = qe.EdgeConfig(
        vectors={}, sparse_vectors={"bm25": qe.EdgeSparseVectorParams(modifier=qe.Modifier.Idf)}
    )
    shard = qe.EdgeShard.create(str(tmp_path / "s"), config)
    try:
        points = []
        for i, d in enumerate(docs):
            sv = model.document(d)
            points.append(qe.Point(i, {"bm25": qe.SparseVector(list(sv.indices), list(sv.values))}, {}))
        shard.update(qe.UpdateOperation.upsert_points(points))
        for query in ("vitamin multiple sclerosis", "protein cold stress cells", "imaging"):
            expected = bm25_scores(query, docs, model)
            q = model.query(query)
            hits = shard.query(
                qe.QueryRequest(
                    limit=10,
                    query=qe.Query.Nearest(qe.SparseVector(list(q.indices), list(q.values)), using="bm25"),
                )
            )
            got = {int(h.id): h.score for h in hits}
            assert set(got) == {i for i, s in enumerate(expected) if s > 0}
            for i, score in got.items():
                assert score == pytest.approx(expected[i], rel=1e-4), (query, i)
    finally:
        shard.close()
