"""The comparison users need: for each institution, the model it could train alone
(local-only), the federated model, and the pooled-data model (simulation-only reference)."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from rich import box
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
    federated_no_dp: float | None = None  # the same federation without DP (cost of privacy)


PERSONAL = ("finetuned", "ditto")
EXTRA = (*PERSONAL, "federated_no_dp")  # optional columns, present when the run has them
# column: (full header, compact header, legend of the compact header)
HEADERS = {
    "n_test": ("test rows", "n", "test rows"),
    "local_only": ("local-only", "local", "the institution's own model on its own test rows"),
    "local_only_everywhere": ("local-only (all tests)", "l@all",
                              "that model on every institution's test rows"),
    "federated": ("federated", "fed", "the federated model"),
    "pooled": ("pooled", "pooled", "all raw data in one place (simulation only)"),
    "finetuned": ("finetuned (personal)", "tuned", "federated, fine-tuned locally (personal)"),
    "ditto": ("ditto (personal)", "ditto", "Ditto personal model"),
    "federated_no_dp": ("federated (no DP)", "no-DP", "the same federation without DP"),
}


@dataclass(frozen=True)
class Comparison:
    """Per-institution rows and the example-weighted row ("all"), for one metric; `others`:
    the same comparison for the report's further metrics (AUC; R² and MAE; your own)."""

    metric: str
    rows: tuple[ComparisonRow, ...]
    overall: ComparisonRow
    others: tuple[Comparison, ...] = ()

    @property
    def higher_is_better(self) -> bool:
        return HIGHER_IS_BETTER.get(self.metric, True)

    @property
    def personal(self) -> list[str]:
        """The personal-model columns this comparison has (fine-tuned, Ditto)."""
        return [k for k in PERSONAL if getattr(self.overall, k) is not None]

    @property
    def columns(self) -> list[str]:
        """The metric columns, optional ones included when present."""
        return ["local_only", "local_only_everywhere", "federated", "pooled",
                *[k for k in EXTRA if getattr(self.overall, k) is not None]]

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
        out = {"metric": self.metric, "higher_is_better": self.higher_is_better,
               "institutions": [asdict(r) for r in self.rows], "overall": asdict(self.overall),
               "mean_local_only": self.mean_local_only,
               "mean_local_only_everywhere": self.mean_local_only_everywhere,
               "federated_wins": self.federated_wins}
        if self.others:
            out["other_metrics"] = {c.metric: c.to_dict() for c in self.others}
        return out

    def with_others(self, others: Sequence[Comparison]) -> Comparison:
        """This comparison with the further metrics' comparisons attached."""
        return replace(self, others=tuple(others))


def build_comparison(metric: str, sizes: Mapping[str, int],
                     local: Mapping[str, Mapping[str, float]],
                     local_everywhere: Mapping[str, Mapping[str, float]],
                     federated: Mapping[str, Mapping[str, float]],
                     pooled: Mapping[str, Mapping[str, float]],
                     federated_no_dp: Mapping[str, Mapping[str, float]] | None = None
                     ) -> Comparison:
    """Rows from per-institution metric dicts; the overall row weights by test size (RMSE is
    recombined from MSE so that it is the RMSE over all test rows). `federated_no_dp`: the
    same federation trained without differential privacy, when the run used it."""
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
        if federated_no_dp is not None:
            out["federated_no_dp"] = (overall(federated_no_dp) if n is None
                                      else federated_no_dp[n][metric])
        return out

    rows = tuple(ComparisonRow(n, sizes[n], local[n][metric], local_everywhere[n][metric],
                               federated[n][metric], pooled[n][metric], **personal(n))
                 for n in names)
    return Comparison(metric, rows, ComparisonRow(
        "all (weighted)", total, overall(local), overall(local_everywhere), overall(federated),
        overall(pooled), **personal(None)))


def others_table(cmp: Comparison) -> Table | None:
    """The further metrics' weighted rows (one line per metric), or None when there are
    none; compact headers, so it fits an 80-column terminal."""
    if not cmp.others:
        return None
    table = Table(title="Other metrics (weighted by test rows)", box=box.SIMPLE_HEAD,
                  padding=(0, 1))
    table.add_column("metric", no_wrap=True)
    keys = ("local_only", "local_only_everywhere", "federated", "pooled")
    for key in keys:
        table.add_column(HEADERS[key][1], justify="right", no_wrap=True)
    table.add_column("better", no_wrap=True)
    for other in cmp.others:
        table.add_row(other.metric, *[_fmt(getattr(other.overall, k)) for k in keys],
                      "higher" if other.higher_is_better else "lower")
    return table


def _fmt(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.4f}"


def comparison_table(cmp: Comparison, width: int) -> tuple[Table, str | None]:
    """The comparison as a table that fits `width` characters: full headers when they fit,
    else compact headers and the legend to print under it."""
    for compact in (False, True):
        table = Table(title=f"Does collaborating pay? ({cmp.metric}, held-out test split)",
                      box=box.SIMPLE_HEAD if compact else box.HEAVY_HEAD,
                      padding=(0, 1), collapse_padding=compact, pad_edge=not compact)
        table.add_column("institution", no_wrap=True)
        for key in ("n_test", *cmp.columns):
            table.add_column(HEADERS[key][int(compact)], justify="right", no_wrap=True)
        for r in (*cmp.rows, cmp.overall):
            table.add_row(r.institution, str(r.n_test),
                          *[_fmt(getattr(r, k)) for k in cmp.columns])
        if _rendered_width(table) <= width:
            break
    legend = None
    if compact:
        legend = "; ".join(f"{HEADERS[k][1]}: {HEADERS[k][2]}" for k in ("n_test", *cmp.columns))
    return table, legend


def _rendered_width(table: Table) -> int:
    wide = Console(width=10_000, file=io.StringIO(), color_system=None)
    wide.print(table)
    return max(len(line.rstrip()) for line in wide.file.getvalue().splitlines())  # type: ignore[attr-defined]


def print_comparison(cmp: Comparison, console: Console | None = None) -> None:
    """The comparison as a terminal table that fits the console, with the answer under it."""
    console = console or Console()
    table, legend = comparison_table(cmp, console.width)
    console.print(table)
    if legend:
        console.print(legend, highlight=False)
    o = cmp.overall
    console.print(f"On its own test rows, the federated model matches or beats the "
                  f"institution's own model at {len(cmp.federated_wins)} of {len(cmp.rows)} "
                  f"institutions (weighted by test rows, {cmp.metric}: {_fmt(o.federated)} vs "
                  f"{_fmt(o.local_only)}).", highlight=False)
    console.print(f"On every institution's test rows (weighted by test rows, the table's last "
                  f"row): an institution's own model scores {_fmt(o.local_only_everywhere)}, "
                  f"the federated model {_fmt(o.federated)}; pooling all raw data (possible "
                  f"only in simulation) gives {_fmt(o.pooled)}.", highlight=False)
    more = others_table(cmp)
    if more is not None:
        console.print(more)
    if o.federated_no_dp is not None:
        console.print(f"Cost of differential privacy: the same federation without DP scores "
                      f"{_fmt(o.federated_no_dp)} (local-only and pooled are trained without "
                      f"DP: an institution alone needs no protection from the others).",
                      highlight=False)


def write_comparison(cmp: Comparison, folder: Path) -> None:
    """comparison.json (further metrics under "other_metrics"), comparison.csv (the primary
    metric) and comparison_<metric>.csv for each further metric."""
    (folder / "comparison.json").write_text(json.dumps(cmp.to_dict(), indent=2))
    _write_csv(cmp, folder / "comparison.csv")
    for other in cmp.others:
        _write_csv(other, folder / f"comparison_{other.metric}.csv")


def _write_csv(cmp: Comparison, path: Path) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        names = {"local_only_everywhere": "local_only_all_tests"}
        w.writerow(["institution", "n_test",
                    *[f"{names.get(k, k)}_{cmp.metric}" for k in cmp.columns]])
        for r in (*cmp.rows, cmp.overall):
            w.writerow([r.institution, r.n_test, *[getattr(r, k) for k in cmp.columns]])


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
