"""Percentiles and latency summaries.

`percentile` interpolates linearly between the two nearest ranks (numpy's default method, "type 7"
of Hyndman & Fan), so p50 of [1, 2, 3, 4] is 2.5 and p100 is the maximum. Summaries are in
milliseconds because every latency in this benchmark is; inputs are seconds.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

PERCENTILES = (50.0, 90.0, 99.0)


def percentile(values: Sequence[float], q: float, *, is_sorted: bool = False) -> float:
    """The q-th percentile (0 ≤ q ≤ 100) of `values`, linearly interpolated; ValueError if empty."""
    if not values:
        raise ValueError("percentile of an empty sequence")
    if not 0.0 <= q <= 100.0 or math.isnan(q):
        raise ValueError(f"percentile q must be within [0, 100], got {q}")
    data = values if is_sorted else sorted(values)
    pos = (len(data) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(data) - 1)
    frac = pos - lo
    return float(data[lo]) + (float(data[hi]) - float(data[lo])) * frac


def summarize_ms(
    latencies_s: Iterable[float], percentiles: Sequence[float] = PERCENTILES
) -> dict[str, float]:
    """{"n", "mean_ms", "min_ms", "max_ms", "p50_ms", "p90_ms", "p99_ms"} of latencies given in seconds.

    An empty input gives {"n": 0}: a stage that never ran is reported as such, not as zeros.
    """
    data = sorted(float(x) * 1000.0 for x in latencies_s)
    if not data:
        return {"n": 0}
    out: dict[str, float] = {
        "n": len(data),
        "mean_ms": sum(data) / len(data),
        "min_ms": data[0],
        "max_ms": data[-1],
    }
    for q in percentiles:
        out[f"p{_label(q)}_ms"] = percentile(data, q, is_sorted=True)
    return out


def _label(q: float) -> str:
    return str(int(q)) if float(q).is_integer() else str(q).replace(".", "_")


def round_floats(value: object, digits: int = 3) -> object:
    """Rounds every float inside nested dicts / lists (for readable JSON); other values unchanged."""
    if isinstance(value, float):
        return round(value, digits)
    if isinstance(value, dict):
        return {k: round_floats(v, digits) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [round_floats(v, digits) for v in value]
    return value
