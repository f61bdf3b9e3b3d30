"""The comparison users need: for each institution, the model it could train alone
(local-only), the federated model, and the pooled-data model (simulation-only reference)."""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table

from fedsilo.evaluation.metrics import HIGHER_IS_BETTER


@dataclass(frozen=True)
class ComparisonRow:
    """One institution. `local_only` scores its own model on its own test rows;
    `local_only_everywhere` scores the same model on every institution's test rows (what the
    model is worth to the consortium, FLamby's "local" figure)."""

    institution: str
    n_test: int
    local_only: float
    local_only_everywhere: float
    federated: float
    pooled: float
    finetuned: float | None = None  # the federated model fine-tuned locally (personal)
    ditto: float | None = None      # Ditto's personal model


PERSONAL = ("finetuned", "ditto")


@dataclass(frozen=True)
class Comparison:
    """Per-institution rows and the example-weighted row ("all"), for one metric."""

    metric: str
    rows: tuple[ComparisonRow, ...]
    overall: ComparisonRow

    @property
    def higher_is_better(self) -> bool:
        return HIGHER_IS_BETTER.get(self.metric, True)

    @property
    def personal(self) -> list[str]:
        """The personal-model columns this comparison has (fine-tuned, Ditto)."""
        return [k for k in PERSONAL if getattr(self.overall, k) is not None]

    @property
    def mean_local_only(self) -> float:
        """Mean over institutions of each local model on its own test rows."""
        return sum(r.local_only for r in self.rows) / len(self.rows)

    @property
    def mean_local_only_everywhere(self) -> float:
        """Mean over institutions of each local model on all institutions' test rows."""
        return sum(r.local_only_everywhere for r in self.rows) / len(self.rows)

    def at_least(self, a: float, b: float) -> bool:
        """a is as good as b or better, for this metric."""
        return a >= b if self.higher_is_better else a <= b

    @property
    def federated_wins(self) -> list[str]:
        """Institutions where the federated model matches or beats their own model on their
        own test rows."""
        return [r.institution for r in self.rows if self.at_least(r.federated, r.local_only)]

    def to_dict(self) -> dict:
        return {"metric": self.metric, "higher_is_better": self.higher_is_better,
                "institutions": [asdict(r) for r in self.rows], "overall": asdict(self.overall),
                "mean_local_only": self.mean_local_only,
                "mean_local_only_everywhere": self.mean_local_only_everywhere,
                "federated_wins": self.federated_wins}


def build_comparison(metric: str, sizes: Mapping[str, int],
                     local: Mapping[str, Mapping[str, float]],
                     local_everywhere: Mapping[str, Mapping[str, float]],
                     federated: Mapping[str, Mapping[str, float]],
                     pooled: Mapping[str, Mapping[str, float]]) -> Comparison:
    """Rows from per-institution metric dicts; the overall row weights by test size (RMSE is
    recombined from MSE so that it is the RMSE over all test rows)."""
    names = sorted(sizes)
    total = sum(sizes[n] for n in names)

    def overall(results: Mapping[str, Mapping[str, float]], prefix: str = "") -> float:
        key = prefix + ("mse" if metric == "rmse" else metric)
        value = sum(sizes[n] * results[n][key] for n in names) / total
        return value ** 0.5 if metric == "rmse" else value

    def personal(n: str | None) -> dict[str, float]:
        out = {}
        for kind in PERSONAL:
            if all(f"{kind}_{metric}" in federated[m] for m in names):
                out[kind] = (overall(federated, f"{kind}_") if n is None
                             else federated[n][f"{kind}_{metric}"])
        return out

    rows = tuple(ComparisonRow(n, sizes[n], local[n][metric], local_everywhere[n][metric],
                               federated[n][metric], pooled[n][metric], **personal(n))
                 for n in names)
    return Comparison(metric, rows, ComparisonRow(
        "all (weighted)", total, overall(local), overall(local_everywhere), overall(federated),
        overall(pooled), **personal(None)))


def _fmt(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.4f}"


def print_comparison(cmp: Comparison, console: Console | None = None) -> None:
    """The comparison as a terminal table, with the one-line answer under it."""
    console = console or Console()
    table = Table(title=f"Does collaborating pay? ({cmp.metric}, held-out test split)")
    personal = cmp.personal
    for col in ("institution", "test rows", "local-only", "local-only (all tests)",
                "federated", "pooled", *[f"{k} (personal)" for k in personal]):
        table.add_column(col, justify="left" if col == "institution" else "right")
    for r in (*cmp.rows, cmp.overall):
        table.add_row(r.institution, str(r.n_test), _fmt(r.local_only),
                      _fmt(r.local_only_everywhere), _fmt(r.federated), _fmt(r.pooled),
                      *[_fmt(getattr(r, k)) for k in personal])
    console.print(table)
    o = cmp.overall
    console.print(f"On its own test rows, the federated model matches or beats the "
                  f"institution's own model at {len(cmp.federated_wins)} of {len(cmp.rows)} "
                  f"institutions (weighted {cmp.metric}: {_fmt(o.federated)} vs "
                  f"{_fmt(o.local_only)}).")
    console.print(f"For the whole consortium (every institution's test rows), an institution's "
                  f"own model scores {_fmt(cmp.mean_local_only_everywhere)} on average, the "
                  f"federated model {_fmt(o.federated)}; pooling all raw data (possible only "
                  f"in simulation) gives {_fmt(o.pooled)}.")


def write_comparison(cmp: Comparison, folder: Path) -> None:
    (folder / "comparison.json").write_text(json.dumps(cmp.to_dict(), indent=2))
    with open(folder / "comparison.csv", "w", newline="") as f:
        w = csv.writer(f)
        personal = cmp.personal
        w.writerow(["institution", "n_test", f"local_only_{cmp.metric}",
                    f"local_only_all_tests_{cmp.metric}", f"federated_{cmp.metric}",
                    f"pooled_{cmp.metric}", *[f"{k}_{cmp.metric}" for k in personal]])
        for r in (*cmp.rows, cmp.overall):
            w.writerow([r.institution, r.n_test, r.local_only, r.local_only_everywhere,
                        r.federated, r.pooled, *[getattr(r, k) for k in personal]])


def write_history(rounds: Sequence[Mapping], folder: Path) -> None:
    """history.json (every round, nested metrics) and history.csv (one row per institution
    and round, plus a 'federated' row)."""
    (folder / "history.json").write_text(json.dumps(list(rounds), indent=2))
    rows = []
    for ev in rounds:
        for inst, metrics in [*ev["evaluation"].items(), ("federated", ev["federated"])]:
            if metrics:
                rows.append({"round": ev["round"], "institution": inst, **metrics})
    if rows:
        keys = sorted({k for r in rows for k in r} - {"round", "institution"})
        with open(folder / "history.csv", "w", newline="") as f:
            w = csv.DictWriter(f, ["round", "institution", *keys])
            w.writeheader()
            w.writerows(rows)
