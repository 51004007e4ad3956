"""Opens versus disables, one point per (policy, seed) and a larger marker for each policy's mean."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any


def opens_vs_disables(per_seed: Mapping[str, Sequence[Mapping[str, Any]]], out: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")  # no display on a server
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 5.0), dpi=120)
    for i, (name, runs) in enumerate(per_seed.items()):
        color = f"C{i % 10}"
        xs = [float(r["disables"]) for r in runs]
        ys = [float(r["opens"]) for r in runs]
        ax.scatter(xs, ys, s=14, color=color, alpha=0.5)
        label = f"{name} (upper reference)" if name.startswith("oracle") else name
        ax.scatter(
            [sum(xs) / len(xs)], [sum(ys) / len(ys)], s=80, color=color, edgecolor="black", label=label
        )
    ax.set_xlabel("fans who disabled notifications (30 days)")
    ax.set_ylabel("notifications opened (30 days)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
