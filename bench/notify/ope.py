"""Off-policy estimates of a target policy's value from a randomised log: IPS and SNIPS, bootstrap CIs.

Each logged row is one non-transactional candidate with the logging action (−1 = DROP, k ≥ 0 =
deliver k hours after the decision), its propensity μ(a|x), the observed reward r (value of the
notification if opened, else 0) and the target policy's action on the same logged state. With
w = 1[a_target = a_log] / μ:

    IPS   = mean(w · r)                    (unbiased for the per-decision value)
    SNIPS = Σ w · r / Σ w                  (self-normalised: a little bias, much less variance)

The target's DIGEST counts as DROP (a digest is not this notification). What these estimate is the
target's expected reward per decision *on the logging policy's state distribution*; a full rollout of
the target changes fans' fatigue and who has disabled, so it can differ — the benchmark reports both.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt


@dataclass(frozen=True)
class Estimate:
    value: float
    ci_low: float
    ci_high: float

    def as_dict(self) -> dict[str, float]:
        return {"value": self.value, "ci95_low": self.ci_low, "ci95_high": self.ci_high}


def ips_snips(
    logged_action: npt.NDArray[np.int64],
    propensity: npt.NDArray[np.float64],
    reward: npt.NDArray[np.float64],
    target_action: npt.NDArray[np.int64],
    *,
    groups: npt.NDArray[np.int64] | None = None,
    resamples: int = 1000,
    seed: int = 0,
) -> tuple[Estimate, Estimate]:
    """(IPS, SNIPS) with percentile bootstrap 95% intervals.

    `groups` (e.g. the fan of each row) resamples whole groups instead of rows: one fan's rows share
    its propensity to open and its fatigue, so they are not independent, and a row bootstrap would
    give intervals that are too narrow. Without `groups` every row is its own group.
    """
    if not len(logged_action) == len(propensity) == len(reward) == len(target_action):
        raise ValueError("all arrays need one entry per logged row")
    if len(reward) == 0:
        raise ValueError("empty log")
    if np.any(propensity <= 0):
        raise ValueError("propensities must be positive")
    if groups is not None and len(groups) != len(reward):
        raise ValueError("groups needs one entry per logged row")
    w = (logged_action == target_action) / propensity
    wr = w * reward
    _, cluster = np.unique(np.arange(len(w)) if groups is None else groups, return_inverse=True)
    n_groups = int(cluster.max()) + 1
    # Per-group sums: a bootstrap draw is then a vector of group multiplicities.
    sums = np.stack(
        [np.bincount(cluster, weights=x, minlength=n_groups) for x in (np.ones(len(w)), w, wr)], axis=1
    )

    def both(counts: npt.NDArray[np.float64]) -> tuple[float, float]:
        rows, total_w, total_wr = counts @ sums
        return float(total_wr / rows), float(total_wr / total_w) if total_w > 0 else 0.0

    point = both(np.ones(n_groups))
    rng = np.random.default_rng(seed)
    boots = np.array(
        [
            both(np.bincount(rng.integers(0, n_groups, n_groups), minlength=n_groups).astype(np.float64))
            for _ in range(resamples)
        ]
    )
    lo, hi = np.percentile(boots, [2.5, 97.5], axis=0)
    return Estimate(point[0], float(lo[0]), float(hi[0])), Estimate(point[1], float(lo[1]), float(hi[1]))
