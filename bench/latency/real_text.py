"""The search latency bench's catalogue with real-language text in place of the generator's words.

The generator (kindred.data.generate) writes post titles and texts from a few hundred topic words and
creator names from a small syllable set, so on its 1.1M documents every BM25 term and name trigram has
a posting list tens of thousands long (bench.latency.search_corpus). Real text is Zipfian: a query's
words are mostly rarer than that. This module keeps the generated catalogue's structure (the same
creators, posts, categories, tags, access levels, times and ids) and replaces only the words:

- a post's title is a BEIR SciFact title and its text two to four SciFact abstract sentences, drawn at
  random (real English, ~5k abstracts; the domain is science, not creators' posts, but the word
  statistics are natural-language ones);
- a creator's name is a real artist name from HetRec Last.fm (17,632 names): the first 17,632
  creators take them as they are, the rest join the first word(s) of one name to the last word of
  another, so 100k names stay distinct-ish and keep real names' character trigrams;
- a creator's description is one SciFact sentence.

Both data sets are read in place from ../shared/data (their licences forbid copying them into the
repository); the bench needs them present. Nothing else changes, so a search latency run on the two
catalogues differs only in the words.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bench.recsys.protocol import default_data_dir as hetrec_dir
from bench.search.scifact import DEFAULT_DIR as SCIFACT_DIR

HETREC_DIR = hetrec_dir()

# Sentence ends: a full stop, question or exclamation mark followed by space and a capital or digit.
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9])")


def available() -> bool:
    return (SCIFACT_DIR / "corpus.jsonl").is_file() and (HETREC_DIR / "artists.dat").is_file()


def sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE_END.split(text) if s.strip()]


def artist_names(path: Path = HETREC_DIR / "artists.dat") -> list[str]:
    """HetRec's artist names in file order (tab-separated, header row, `id name url picture`)."""
    names = []
    with open(path, encoding="utf-8", errors="replace") as fh:
        next(fh)
        for line in fh:
            cols = line.rstrip("\r\n").split("\t")
            if len(cols) > 1 and cols[1].strip():
                names.append(cols[1].strip())
    return names


def mixed_names(names: Sequence[str], n: int, rng: np.random.Generator) -> list[str]:
    """`n` names: the real ones first, then the leading word(s) of one joined to the last word of
    another (both real), so every name's trigrams are real names' trigrams."""
    out = list(names[:n])
    words = [nm.split() for nm in names]
    while len(out) < n:
        a, b = words[int(rng.integers(len(words)))], words[int(rng.integers(len(words)))]
        head = " ".join(a[:-1]) if len(a) > 1 else a[0]
        out.append(f"{head} {b[-1]}")
    return out


@dataclasses.dataclass(frozen=True)
class TextPool:
    titles: list[str]
    sentences: list[str]
    names: list[str]

    @classmethod
    def load(cls) -> TextPool:
        from bench.search.scifact import load

        if not available():
            raise FileNotFoundError(
                f"real words need BEIR SciFact in {SCIFACT_DIR} and HetRec Last.fm in {HETREC_DIR}"
            )
        corpus = load(SCIFACT_DIR).corpus.values()
        return cls(
            titles=[d.title for d in corpus if d.title],
            sentences=[s for d in corpus for s in sentences(d.text)],
            names=artist_names(),
        )


def with_real_text(catalogue: Any, pool: TextPool, seed: int = 11) -> Any:
    """The catalogue with every creator name / description and post title / text replaced (in place)."""
    rng = np.random.default_rng(seed)
    names = mixed_names(pool.names, len(catalogue.creators), rng)
    order = rng.permutation(len(names))  # real and joined names spread over creators
    sent = pool.sentences
    catalogue.creators = [
        dataclasses.replace(c, name=names[int(order[i])], description=sent[int(rng.integers(len(sent)))])
        for i, c in enumerate(catalogue.creators)
    ]
    n_posts = len(catalogue.posts)
    title_idx = rng.integers(len(pool.titles), size=n_posts)
    lengths = rng.integers(2, 5, size=n_posts)
    sent_idx = rng.integers(len(sent), size=int(lengths.sum()))
    posts, at = [], 0
    for p, t, k in zip(catalogue.posts, title_idx, lengths, strict=True):
        text = " ".join(sent[int(j)] for j in sent_idx[at : at + int(k)])
        at += int(k)
        posts.append(dataclasses.replace(p, title=pool.titles[int(t)], text=text))
    catalogue.posts = posts
    return catalogue
