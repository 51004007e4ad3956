"""Matrix factorisation (implicit ALS) for the "mf" candidate source, with fan vectors folded in per request.

The trainer (trainer.mf) fits creator factors Y on the binary fan × creator matrix of follows and
memberships with implicit's ALS (Hu, Koren & Volinsky 2008), each fan's row BM25-weighted (popular
creators count less, long follow lists are normalised). Serving keeps no fan vectors: for a fan who
follows the set S, the fan vector is the exact ALS user step against Y,

    x = (YᵀY + λI + Σ_{i∈S} (c_i − 1) y_i y_iᵀ)⁻¹ Σ_{i∈S} c_i y_i,    c_i = α · bm25_i(|S|)

(implicit's own least-squares step, so serving scores what training optimised), and a creator's score
is x · y. A follow made a second ago counts on the next request, and a fan who joined after training
gets a vector from its first follow. Cost per request: one k × k solve plus the product with the
creators `MfModel.top` cannot rule out by the length of their vector.

Why ALS next to the two-tower: on HetRec Last.fm a well-regularised ALS is the strongest single model
of every peer measured (bench/RESULTS.md), and the two-tower's hashed-history user tower could not
match it on the trainer's own time hold-out (0.10 vs 0.17 NDCG@10); the ranker gets both scores.

The model travels as extra files of the two-tower user model version it was trained with
(`FILES`, plus "mf" in that version's manifest), so the version switch that swaps the tower and the
creator index swaps it too.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from kindred.models import npy_bytes

FloatArray = npt.NDArray[np.float32]

FACTORS_FILE: Final = "mf_item_factors.npy"
IDF_FILE: Final = "mf_idf.npy"
CREATOR_IDS_FILE: Final = "mf_creator_ids.json"
FILES: Final = (FACTORS_FILE, IDF_FILE, CREATOR_IDS_FILE)
MANIFEST_KEY: Final = "mf"
# The candidate's scores key the fan-creator dot product arrives under (for every candidate, whichever
# source proposed it: retrieval_svc.sources.ItemFacts), and the ranker feature that reads it.
MF_SCORE_KEY: Final = "mf_score"


@dataclasses.dataclass(frozen=True)
class MfParams:
    """The `[mf]` table of a trainer config. Defaults: what HetRec Last.fm's validation split chose for
    `implicit` ALS on two of three seeds (bench/results/recsys_lastfm.json, implicit_als per_seed)."""

    factors: int = 64
    regularization: float = 20.0
    alpha: float = 1.0
    iterations: int = 15
    bm25_k1: float = 100.0
    bm25_b: float = 0.8
    # Fans following more creators than this contribute their first ones only (by creator id), as in
    # the item-to-item table: such accounts say little and cost the most.
    max_follows_per_fan: int = 1000

    def __post_init__(self) -> None:
        if self.factors < 1 or self.iterations < 1:
            raise ValueError(
                f"mf.factors and mf.iterations must be ≥ 1, got {self.factors}, {self.iterations}"
            )
        if self.regularization <= 0 or self.alpha <= 0:
            raise ValueError("mf.regularization and mf.alpha must be > 0 (the fold-in solve needs them)")


def bm25_weights(idf: FloatArray, n_follows: int, avg_length: float, k1: float, b: float) -> FloatArray:
    """BM25 of one binary fan row (implicit.nearest_neighbours.bm25_weight on a row of ones)."""
    norm = (1.0 - b) + b * n_follows / max(avg_length, 1e-9)
    weights: FloatArray = ((k1 + 1.0) / (k1 * norm + 1.0) * idf).astype(np.float32)
    return weights


@dataclasses.dataclass(frozen=True, eq=False)
class MfModel:
    creator_ids: tuple[str, ...]
    item_factors: FloatArray  # (C, k), rows in creator_ids order
    idf: FloatArray  # (C,): log(fans) − log1p(fans following the creator), at training time
    avg_length: float  # mean follows per fan at training time (BM25's length norm)
    params: MfParams
    version: str = ""

    def __post_init__(self) -> None:
        c = len(self.creator_ids)
        if self.item_factors.ndim != 2 or self.item_factors.shape[0] != c or self.idf.shape != (c,):
            raise ValueError(
                f"mf model: {c} creator ids need ({c}, k) factors and ({c},) idf, "
                f"got {self.item_factors.shape} and {self.idf.shape}"
            )
        k = self.item_factors.shape[1]
        # YᵀY + λI once per model: every fold-in starts from it. Summed in float64 over row blocks, so no
        # float64 copy of the whole factor matrix is ever held.
        gram = self.params.regularization * np.eye(k)
        for start in range(0, c, 8192):
            y = self.item_factors[start : start + 8192].astype(np.float64)
            gram += y.T @ y
        object.__setattr__(self, "_gram", gram)
        object.__setattr__(self, "_row", {cid: i for i, cid in enumerate(self.creator_ids)})
        # A creator no fan followed when the model was fitted has an all-zero vector (ALS's item step
        # solves to 0), so its score is exactly 0: only the others are multiplied — 14,477 of the 100,000
        # creators of the latency platform (counted in-process, 2026-11-27). They are kept in descending
        # order of their norm, for `top`'s bound.
        # Squared norms summed in float32 by einsum: no float64 copy of the factors (a 100,000 × 64 copy
        # raised the service's peak memory by ~100 MB); `top`'s margin covers the rounding.
        norms = np.sqrt(np.einsum("ij,ij->i", self.item_factors, self.item_factors).astype(np.float64))
        active = np.flatnonzero(norms > 0)
        by_norm = active[np.argsort(-norms[active], kind="stable")]
        position = np.full(c, -1, dtype=np.int64)
        position[by_norm] = np.arange(len(by_norm))
        object.__setattr__(self, "_by_norm", by_norm)
        object.__setattr__(self, "_by_norm_factors", np.ascontiguousarray(self.item_factors[by_norm]))
        object.__setattr__(self, "_sorted_norms", norms[by_norm])
        object.__setattr__(self, "_position", position)

    def __eq__(self, other: object) -> bool:
        """Same creators, factors, weighting and parameters (the version is a label, not compared)."""
        if not isinstance(other, MfModel):
            return NotImplemented
        return (
            self.creator_ids == other.creator_ids
            and np.array_equal(self.item_factors, other.item_factors)
            and np.array_equal(self.idf, other.idf)
            and self.avg_length == other.avg_length
            and self.params == other.params
        )

    __hash__ = None  # type: ignore[assignment]

    @property
    def dim(self) -> int:
        return int(self.item_factors.shape[1])

    def row_of(self, creator_id: str) -> int | None:
        row: int | None = self._row.get(creator_id)  # type: ignore[attr-defined]
        return row

    def rows(self, creator_ids: Iterable[str]) -> npt.NDArray[np.int64]:
        """Distinct rows of the creators the model knows, in first-seen order (unknown ids dropped)."""
        get = self._row.get  # type: ignore[attr-defined]
        found = (get(str(c)) for c in creator_ids)
        return np.fromiter(dict.fromkeys(r for r in found if r is not None), dtype=np.int64)

    def fold_in(self, followed: Iterable[str]) -> FloatArray | None:
        """The fan vector (k,) of a fan following `followed`; None when the model knows none of them."""
        return self.fold_in_rows(self.rows(followed))

    def fold_in_rows(self, followed_rows: npt.NDArray[np.int64]) -> FloatArray | None:
        """`fold_in` from the followed creators' rows (`rows(...)`), for a caller that needs them too."""
        rows = followed_rows[: self.params.max_follows_per_fan]
        if len(rows) == 0:
            return None
        p = self.params
        conf = p.alpha * bm25_weights(self.idf[rows], len(rows), self.avg_length, p.bm25_k1, p.bm25_b)
        ys = self.item_factors[rows].astype(np.float64)  # (n, k)
        a = self._gram + (ys * (conf - 1.0)[:, None]).T @ ys  # type: ignore[attr-defined]
        b = ys.T @ conf
        vector: FloatArray = np.linalg.solve(a, b).astype(np.float32)
        return vector

    def scores(self, vector: FloatArray) -> FloatArray:
        """x · y for every creator (C,); exactly 0 for creators with a zero vector."""
        out: FloatArray = np.zeros(len(self.creator_ids), dtype=np.float32)
        out[self._by_norm] = self._by_norm_factors @ vector  # type: ignore[attr-defined]
        return out

    def scores_of(self, rows: npt.NDArray[np.int64], vector: FloatArray) -> FloatArray:
        """x · y for these rows only."""
        out: FloatArray = self.item_factors[rows] @ vector
        return out

    def top(
        self, vector: FloatArray, n: int, exclude: npt.NDArray[np.int64] | Sequence[int] = ()
    ) -> tuple[npt.NDArray[np.int64], FloatArray]:
        """(rows, scores) of the `n` best scores, best first (ties by row), never one of `exclude`: what
        `top_rows(self.scores(vector), n, exclude)` returns, without scoring every creator.

        Why it can stop early (the length bound of exact maximum inner-product search: Ram & Gray 2012,
        Teflioudi et al.'s LEMP 2015): x · y ≤ ‖x‖·‖y‖. The creators are scanned in blocks in
        descending order of ‖y‖; once ‖x‖ times the largest norm left is below the n-th best score
        found, no creator left can enter. When the n-th best is not positive the zero-vector creators
        (score exactly 0) could enter too, and every creator is scored instead.
        """
        if n <= 0:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
        factors: FloatArray = self._by_norm_factors  # type: ignore[attr-defined]
        norms: npt.NDArray[np.float64] = self._sorted_norms  # type: ignore[attr-defined]
        excluded = self._position[np.asarray(exclude, dtype=np.int64)]  # type: ignore[attr-defined]
        excluded = excluded[excluded >= 0]
        # A relative margin on the bound: float32 products and norms (each off by ~k · 6e-8 relative)
        # may exceed the exact bound by rounding, and a creator must never be skipped because of it.
        reach = float(np.linalg.norm(vector.astype(np.float64))) * (1.0 + 1e-4)
        total = len(norms)
        block = max(BOUND_BLOCK_ROWS, n)
        best_pos = np.zeros(0, dtype=np.int64)
        best_scores = np.zeros(0, dtype=np.float32)
        threshold = -np.inf
        start = 0
        while start < total:
            if len(best_scores) == n and reach * norms[start] + 1e-9 < threshold:
                break
            end = min(total, start + block)
            block_scores = factors[start:end] @ vector
            hit = excluded[(excluded >= start) & (excluded < end)]
            block_scores[hit - start] = -np.inf
            keep = np.flatnonzero(block_scores > threshold) if len(best_scores) == n else None
            pos = np.arange(start, end, dtype=np.int64) if keep is None else keep + start
            best_pos = np.concatenate([best_pos, pos])
            best_scores = np.concatenate([best_scores, block_scores if keep is None else block_scores[keep]])
            if len(best_scores) > n:
                chosen = np.argpartition(-best_scores, n - 1)[:n]
                best_pos, best_scores = best_pos[chosen], best_scores[chosen]
            if len(best_scores) == n:
                threshold = float(best_scores.min())
            start = end
        if len(best_scores) < n or not threshold > 0.0:
            # Fewer than n positive scores: the zero-vector creators compete, so rank them all.
            scores = self.scores(vector)
            rows = top_rows(scores, n, exclude)
            return rows, scores[rows]
        rows = self._by_norm[best_pos]  # type: ignore[attr-defined]
        order = np.lexsort((rows, -best_scores))
        return rows[order].astype(np.int64), best_scores[order]

    # --- files ---------------------------------------------------------------------------------------

    def files(self) -> dict[str, bytes]:
        """The extra files of a model version (kindred.models.write_model's `extra_files`)."""
        return {
            FACTORS_FILE: npy_bytes(self.item_factors.astype(np.float32)),
            IDF_FILE: npy_bytes(self.idf.astype(np.float32)),
            CREATOR_IDS_FILE: (json.dumps(list(self.creator_ids)) + "\n").encode(),
        }

    def manifest(self) -> dict[str, Any]:
        """What goes under the "mf" key of that version's manifest."""
        return {
            "params": dataclasses.asdict(self.params),
            "avg_length": self.avg_length,
            "creators": len(self.creator_ids),
            "files": list(FILES),
        }

    @classmethod
    def load(cls, version_dir: Path, manifest: Mapping[str, Any]) -> MfModel | None:
        """The model stored with a model version; None when that version carries none (older trainers)."""
        entry = manifest.get(MANIFEST_KEY)
        if not entry:
            return None
        creator_ids = json.loads((version_dir / CREATOR_IDS_FILE).read_text(encoding="utf-8"))
        return cls(
            creator_ids=tuple(str(c) for c in creator_ids),
            item_factors=np.load(version_dir / FACTORS_FILE, allow_pickle=False).astype(np.float32),
            idf=np.load(version_dir / IDF_FILE, allow_pickle=False).astype(np.float32),
            avg_length=float(entry["avg_length"]),
            params=MfParams(**entry["params"]),
            version=str(manifest.get("version", "")),
        )


class ScoreLookup(Mapping[str, float]):
    """creator id → one fan's score, read-only and computed on demand: the retriever reads it for the
    ~100 merged candidates (`get_many`: one small product), and nobody scores the whole catalogue for it."""

    __slots__ = ("_model", "_vector")

    def __init__(self, model: MfModel, vector: FloatArray) -> None:
        self._model = model
        self._vector = vector

    def __getitem__(self, creator_id: str) -> float:
        row = self._model.row_of(creator_id)
        if row is None:
            raise KeyError(creator_id)
        return float(self._model.item_factors[row] @ self._vector)

    def get(self, creator_id: str, default: Any = None) -> Any:  # no KeyError round trip per candidate
        row = self._model.row_of(creator_id)
        return default if row is None else float(self._model.item_factors[row] @ self._vector)

    def get_many(self, creator_ids: Sequence[str], default: float = 0.0) -> list[float]:
        """`get` of each id in one product (unknown ids: `default`)."""
        rows = list(map(self._model._row.get, creator_ids))  # type: ignore[attr-defined]  # C-level: ~100 ids
        known = [r for r in rows if r is not None]
        scores = iter(self._model.scores_of(np.asarray(known, dtype=np.int64), self._vector).tolist())
        return [default if r is None else next(scores) for r in rows]

    def __iter__(self) -> Iterator[str]:
        return iter(self._model.creator_ids)

    def __len__(self) -> int:
        return len(self._model.creator_ids)


# Rows per block of `MfModel.top`'s bounded scan: large enough that numpy's per-call cost stays small
# next to the product, small enough that the scan stops soon after the bound does.
BOUND_BLOCK_ROWS: Final = 4096

# Selecting the best few of a long score vector: a threshold from a 1-in-16 sample first keeps a few times
# the needed count, and the exact selection runs over those only (~0.07 instead of ~0.7 ms at 100k).
SAMPLE_EVERY: Final = 16


def largest(scores: FloatArray, take: int) -> npt.NDArray[np.int64]:
    """Rows of the `take` largest scores, unordered; exact (the sample only sets a lower bound that at
    least `take` scores pass, else the whole vector is partitioned)."""
    total = len(scores)
    if take >= total:
        return np.arange(total, dtype=np.int64)
    if total >= 64 * SAMPLE_EVERY and take * 64 <= total:
        sample = scores[::SAMPLE_EVERY]
        keep = min(len(sample), 3 * (take // SAMPLE_EVERY + 1) + 8)
        # A sort, not np.partition: introselect degrades ~10× on a sample that is mostly one value (the
        # zeros of never-followed creators), and sorting 1/16 of the vector costs ~0.03 ms either way
        # (6,250 values, in-process, 2026-11-27: partition 0.36 ms on such a sample, sort 0.035 ms).
        threshold = np.sort(sample)[len(sample) - keep]
        above = np.flatnonzero(scores > threshold)
        if len(above) >= take:
            return above[np.argpartition(-scores[above], take - 1)[:take]].astype(np.int64)
        # Fewer above it: all of those, then ties at it (lowest rows first) — a large block of equal
        # scores (the exact zeros of never-followed creators) must not send the whole block to the sort.
        tied = np.flatnonzero(scores == threshold)
        if len(above) + len(tied) >= take:
            return np.concatenate([above, tied[: take - len(above)]]).astype(np.int64)
    return np.argpartition(-scores, take - 1)[:take].astype(np.int64)


def top_rows(
    scores: FloatArray, n: int, exclude: Sequence[int] | npt.NDArray[np.int64] = ()
) -> npt.NDArray[np.int64]:
    """Rows of the `n` best scores, best first (ties by row), never one of `exclude`."""
    take = min(len(scores), n + len(exclude))
    if take <= 0:
        return np.zeros(0, dtype=np.int64)
    top = largest(scores, take)
    top = top[np.lexsort((top, -scores[top]))]
    if len(exclude):
        top = top[~np.isin(top, np.asarray(exclude, dtype=np.int64))]
    return top[:n]


__all__ = [
    "FILES",
    "MANIFEST_KEY",
    "MF_SCORE_KEY",
    "MfModel",
    "MfParams",
    "ScoreLookup",
    "bm25_weights",
    "largest",
    "top_rows",
]
