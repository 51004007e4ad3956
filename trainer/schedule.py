"""Learning-rate schedule shared by the trainer's models."""

from __future__ import annotations

import torch


def one_cycle(
    opt: torch.optim.Optimizer, *, max_lr: float, total_steps: int, warmup: float
) -> torch.optim.lr_scheduler.LRScheduler:
    """OneCycleLR that also works for very short runs.

    OneCycleLR divides by (warm-up steps − 1) and by the remaining steps, so a run whose warm-up
    rounds to one step (e.g. 10 steps at 10 %) raised ZeroDivisionError. Keep both phases at two
    steps or more, and fall back to a constant rate for runs too short to have two phases.
    """
    if total_steps < 4:
        return torch.optim.lr_scheduler.LambdaLR(opt, lambda _step: 1.0)
    pct = min(max(warmup, 2.0 / total_steps), 1.0 - 2.0 / total_steps)
    return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=max_lr, total_steps=total_steps, pct_start=pct)
