"""Two-tower ANN: fan features → user tower (ONNX) → nearest creators in the vector index.

The user tower and the creator vectors come from the same training run, so their versions travel
together (see kindred.vectorstore.factory). The payload filter (languages, categories, mature, the
fan's history) goes into the engine query itself, so k filtered neighbours come back, not fewer.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import numpy as np
import numpy.typing as npt

from kindred import telemetry_schema as schema
from kindred.telemetry import get_tracer
from kindred.vectorstore import VectorIndex, search_ef
from retrieval_svc.sources import FanRow, SourceHit, SourceRequest, SourceSkipped

NAME = "two_tower"
SPAN_USER_TOWER = schema.SPAN_ONNX_RUN  # "onnx.run", named by the model attribute
REASON = "close to the creators you engage with"


class UserTower(Protocol):
    """The ONNX user tower (kindred.models.OnnxModel): (B, F) features → (B, E) embeddings."""

    @property
    def version(self) -> str: ...

    def run(self, inputs: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]: ...


FeatureFn = Callable[..., npt.NDArray[np.float32]]  # (fan_row, now=...) → (F,)


class TwoTowerSource:
    def __init__(
        self,
        model: UserTower,
        index: VectorIndex,
        features: FeatureFn,
        *,
        model_name: str = "two_tower_user",
        hnsw_ef: int = 128,
    ) -> None:
        self._model = model
        self._index = index
        self._features = features
        self._model_name = model_name
        self._hnsw_ef = hnsw_ef
        self._tracer = get_tracer(__name__)

    @property
    def name(self) -> str:
        return NAME

    def invalidate(self) -> None:
        """Nothing to drop: every query goes to the index."""

    def embed(self, fan: FanRow, now: float | None = None) -> npt.NDArray[np.float32]:
        """The fan's user-tower vector (E,)."""
        x = np.asarray(self._features(fan, now=now), dtype=np.float32)[None, :]  # (1, F)
        with self._tracer.start_as_current_span(SPAN_USER_TOWER) as span:
            span.set_attribute(schema.MODEL_NAME, self._model_name)
            span.set_attribute(schema.MODEL_VERSION, self._model.version)
            out = np.asarray(self._model.run(x), dtype=np.float32)  # (1, E)
        if out.ndim != 2 or out.shape[0] != 1 or out.shape[1] != self._index.dim:
            raise ValueError(f"user tower gave shape {out.shape}; the index expects (1, {self._index.dim})")
        embedding: npt.NDArray[np.float32] = out[0]
        return embedding

    def retrieve(self, request: SourceRequest) -> list[SourceHit]:
        if request.fan_error is not None:
            raise RuntimeError(f"fan features unavailable: {request.fan_error}")
        if not request.fan:
            raise SourceSkipped("no features for this fan yet (new fan)")
        vector = self.embed(request.fan, request.now)
        with self._tracer.start_as_current_span(schema.SPAN_QDRANT_QUERY) as span:
            span.set_attribute(schema.SOURCE, NAME)
            ef = search_ef(request.n, self._hnsw_ef)
            # Ids and scores are all a hit becomes: no payload conversion in the engine's binding.
            hits = self._index.search(vector, request.n, request.filter, hnsw_ef=ef, with_payload=False)
            span.set_attribute(schema.CANDIDATES, len(hits))
        return [SourceHit(h.point_id, h.score, REASON) for h in hits]
