"""Fusion weights and thresholds of the hybrid search: defaults, or `<data_dir>/config/search.json`.

The file overrides any subset, e.g. `{"weights": {"dense": 1.0, "bm25": 1.4, "name": 2.0}, "rrf_k": 60}`;
unknown keys fail the start (a typo never silently falls back to a default).

`dense_min_score` is what makes "no match" possible: the dense retriever always has a nearest
neighbour, so without a floor a query of nonsense would return the least unrelated items. The
lexical and name retrievers only return items that share a term or a trigram.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

from kindred.config import Settings

CONFIG_FILE: Final = Path("config") / "search.json"  # under Settings.data_dir
RETRIEVER_NAMES: Final = ("dense", "bm25", "name")


@dataclasses.dataclass(frozen=True)
class SearchParams:
    """`weights`: weighted RRF, per retriever; `depth`: candidates each retriever hands to the fusion."""

    weights: Mapping[str, float] = dataclasses.field(
        default_factory=lambda: {"dense": 1.0, "bm25": 1.0, "name": 2.0}
    )
    rrf_k: int = 60
    depth: int = 100
    dense_min_score: float = 0.35
    name_min_score: float = 0.35
    hnsw_ef: int = 128
    # Learned fusion only: weight of the name term added to a fusion model that has none (its terms
    # are min-max normalised per list, and the SciFact-tuned dense + bm25 weights sum to 1).
    learned_name_weight: float = 0.5
    # BM25 candidates are looked up without the terms in more than this share of the documents (the
    # index's kindred.text.common_terms.TermStats), then scored with every term; None: by every term.
    bm25_common_share: float | None = None
    source: str = "defaults"  # where the weights came from, for logs and responses

    def __post_init__(self) -> None:
        unknown = set(self.weights) - set(RETRIEVER_NAMES)
        if unknown:
            raise ValueError(f"weights for unknown retrievers {sorted(unknown)} (know {RETRIEVER_NAMES})")
        if any(w < 0 for w in self.weights.values()) or self.rrf_k < 1 or self.depth < 1:
            raise ValueError(f"invalid search params {self}")
        if self.bm25_common_share is not None and not 0.0 < self.bm25_common_share < 1.0:
            raise ValueError(
                f"bm25_common_share is a share of the documents, in (0, 1): {self.bm25_common_share}"
            )

    def weight(self, retriever: str) -> float:
        return float(self.weights.get(retriever, 1.0))

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], *, source: str) -> SearchParams:
        fields = {f.name for f in dataclasses.fields(cls)} - {"source"}
        unknown = set(data) - fields
        if unknown:
            raise ValueError(f"unknown search parameters {sorted(unknown)} (know {sorted(fields)})")
        kwargs = dict(data)
        if "weights" in kwargs:
            kwargs["weights"] = {**cls().weights, **{str(k): float(v) for k, v in kwargs["weights"].items()}}
        return cls(**kwargs, source=source)


def load_search_params(settings: Settings) -> SearchParams:
    path = settings.data_dir / CONFIG_FILE
    if not path.exists():
        return SearchParams()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict):
            raise ValueError("expected a JSON object")
        return SearchParams.from_mapping(data, source=str(path))
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{path}: {exc}") from exc
