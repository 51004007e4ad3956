"""BEIR SciFact, read in place from `<repo>/../shared/data/beir-scifact` (never copied into the repo).

Only the training judgements are present there (`qrels/train.tsv`): the test split is measured
independently, so everything here tunes and reports on training queries.
"""

from __future__ import annotations

import csv
import dataclasses
import json
from collections.abc import Mapping
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_DIR = REPO_ROOT.parent / "shared" / "data" / "beir-scifact"


@dataclasses.dataclass(frozen=True)
class Doc:
    doc_id: str
    title: str
    text: str

    @property
    def full_text(self) -> str:
        """Title and abstract as one field (what BM25 and the encoder index)."""
        return f"{self.title}\n{self.text}" if self.title else self.text


@dataclasses.dataclass(frozen=True)
class SciFact:
    corpus: dict[str, Doc]
    queries: dict[str, str]  # every query (train and test); restrict with qrels
    data_dir: Path

    @property
    def train_qrels_path(self) -> Path:
        return self.data_dir / "qrels" / "train.tsv"


def available(data_dir: Path = DEFAULT_DIR) -> bool:
    return (data_dir / "corpus.jsonl").is_file() and (data_dir / "queries.jsonl").is_file()


def load(data_dir: Path = DEFAULT_DIR) -> SciFact:
    """The corpus (in file order) and all queries."""
    if not available(data_dir):
        raise FileNotFoundError(
            f"BEIR SciFact not found under {data_dir} (expected corpus.jsonl, queries.jsonl)"
        )
    corpus: dict[str, Doc] = {}
    with open(data_dir / "corpus.jsonl", encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                row = json.loads(line)
                corpus[str(row["_id"])] = Doc(str(row["_id"]), row.get("title") or "", row.get("text") or "")
    queries: dict[str, str] = {}
    with open(data_dir / "queries.jsonl", encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                row = json.loads(line)
                queries[str(row["_id"])] = row["text"]
    return SciFact(corpus=corpus, queries=queries, data_dir=data_dir)


def load_qrels(path: Path) -> dict[str, dict[str, int]]:
    """BEIR qrels TSV (header `query-id corpus-id score`) → query id → doc id → relevance."""
    qrels: dict[str, dict[str, int]] = {}
    with open(path, encoding="utf-8", newline="") as fh:
        reader = csv.reader(fh, delimiter="\t")
        header = next(reader, None)
        if header is None:
            return qrels
        if not header[0].strip().lower().startswith("query"):  # tolerate a file without a header
            qrels.setdefault(header[0], {})[header[1]] = int(header[2])
        for row in reader:
            if len(row) >= 3:
                qrels.setdefault(row[0].strip(), {})[row[1].strip()] = int(row[2])
    return qrels


def check_consistency(data: SciFact, qrels: Mapping[str, Mapping[str, int]]) -> None:
    """Every judged query and document must exist: a silent mismatch would quietly lower every metric."""
    missing_q = [q for q in qrels if q not in data.queries]
    missing_d = {d for rels in qrels.values() for d in rels if d not in data.corpus}
    if missing_q or missing_d:
        raise ValueError(
            f"qrels name {len(missing_q)} unknown queries and {len(missing_d)} unknown documents"
        )


__all__ = ["DEFAULT_DIR", "Doc", "SciFact", "available", "check_consistency", "load", "load_qrels"]
