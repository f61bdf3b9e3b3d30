"""PNG plot of the evaluation metric per round: each institution and the federated mean,
with the local-only mean and the pooled reference as horizontal lines."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from fedsilo.evaluation.report import Comparison  # noqa: E402


def plot_rounds(rounds: Sequence[Mapping], metric: str, path: Path,
                comparison: Comparison | None = None, title: str = "") -> Path:
    fig, ax = plt.subplots(figsize=(8, 4.8))
    evaluated = [ev for ev in rounds if ev["federated"]]
    institutions = sorted({i for ev in evaluated for i in ev["evaluation"]})
    if len(institutions) <= 12:
        for inst in institutions:
            pts = [(ev["round"], ev["evaluation"][inst][metric]) for ev in evaluated
                   if inst in ev["evaluation"]]
            ax.plot(*zip(*pts), lw=1, alpha=0.6, label=inst)
    ax.plot([ev["round"] for ev in evaluated], [ev["federated"][metric] for ev in evaluated],
            lw=2.5, color="black", label="federated (weighted)")
    if comparison is not None:
        ax.axhline(comparison.overall.pooled, ls="--", color="tab:green", label="pooled")
        ax.axhline(comparison.overall.local_only, ls=":", color="tab:red",
                   label="local-only, own test rows (weighted)")
        ax.axhline(comparison.mean_local_only_everywhere, ls="-.", color="tab:purple",
                   label="local-only models on all test rows (mean)")
    ax.set_xlabel("round")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # rounds are whole numbers
    ax.set_ylabel(metric)
    ax.set_title(title or f"{metric} per round")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
