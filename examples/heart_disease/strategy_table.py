"""Every strategy on the four heart-disease hospitals, beside FLamby's published results.

Logistic regression, FLamby's recipe (batch 4, 100 local SGD steps per round, 15 rounds, all
four hospitals every round) with FLamby's per-strategy learning rates; mean over seeds 42-46.
Per-hospital accuracy on each hospital's own test split; "mean" is the unweighted mean over
the four hospitals (FLamby's figure), "all" the example-weighted one.

    python examples/heart_disease/strategy_table.py
"""

from __future__ import annotations

import csv
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

from fedsilo.config.schema import load_config
from fedsilo.simulation.run import run_simulation

HERE = Path(__file__).resolve().parent
SEEDS = (42, 43, 44, 45, 46)
HOSPITALS = ("cleveland", "hungary", "switzerland", "va-long-beach")

# label, FLamby method, [client] overrides, [strategy], other sections
ROWS: list[tuple[str, str | None, dict, dict, dict]] = [
    ("FedAvg, lr 0.001", "FedAvg100", {"lr": 0.001}, {"name": "fedavg"}, {}),
    ("FedAvg, lr 0.01", None, {}, {"name": "fedavg"}, {}),
    ("FedProx μ=0.01, lr 0.001", "FedProx100", {"lr": 0.001},
     {"name": "fedprox", "mu": 0.01}, {}),
    ("SCAFFOLD, lr 0.001, η_g 1", "Scaffold100", {"lr": 0.001},
     {"name": "scaffold", "server_lr": 1.0}, {}),
    ("FedAdam, lr 0.01, η 0.01, τ 1e-8", "FedAdam100", {},
     {"name": "fedadam", "server_lr": 0.01, "eps": 1e-8}, {}),
    ("FedYogi, lr 0.00316, η 0.01, τ 1e-8", "FedYogi100", {"lr": 0.003162},
     {"name": "fedyogi", "server_lr": 0.01, "tau": 1e-8, "beta2": 0.999}, {}),
    ("FedAdagrad, lr 0.00316, η 0.316, τ 1e-8", "FedAdagrad100", {"lr": 0.003162},
     {"name": "fedadagrad", "server_lr": 0.316228, "tau": 1e-8, "beta1": 0.9}, {}),
    ("FedNova, lr 0.01, 1 epoch (unequal steps)", None, {"steps": None, "epochs": 1},
     {"name": "fednova"}, {}),
    ("FedAvg, 1 epoch (unequal steps)", None, {"steps": None, "epochs": 1},
     {"name": "fedavg"}, {}),
    ("coordinate median, lr 0.01", None, {}, {"name": "fedavg"},
     {"aggregation": {"robust": "median"}}),
    ("trimmed mean β=0.25, lr 0.01", None, {}, {"name": "fedavg"},
     {"aggregation": {"robust": "trimmed_mean", "trim_fraction": 0.25}}),
    ("FedAvg + fine-tuning (1 epoch) / Ditto λ=0.1", None, {}, {"name": "fedavg"},
     {"personalization": {"finetune_epochs": 1, "ditto_lambda": 0.1, "ditto_epochs": 1}}),
]


def flamby_means() -> dict[str, float]:
    """FLamby's mean over its four hospitals' test sets, averaged over seeds 42-46."""
    per: dict[str, list[float]] = defaultdict(list)
    for path in sorted((HERE / "data" / "flamby_results").glob("heart_seed*.csv")):
        with path.open() as f:
            for row in csv.DictReader(f):
                if row["Test"].startswith("client_test"):
                    per[row["Method"]].append(float(row["Metric"]))
    return {m: statistics.mean(v) for m, v in per.items()}


def configured(seed: int, client: dict, strategy: dict, other: dict, compare: bool) -> Any:
    cfg = load_config(HERE / "heart_disease.toml")
    update: dict[str, Any] = {
        "run": cfg.run.model_copy(update={"compare": compare, "seed": seed}),
        "client": cfg.client.model_copy(update=client)}
    raw = cfg.model_dump()
    raw["strategy"] = strategy
    raw.pop("base_dir")
    for section, values in other.items():
        raw[section] = {**raw[section], **values}
    from fedsilo.config.schema import parse_config

    base = parse_config({k: v for k, v in raw.items() if k not in ("run", "client")},
                        cfg.base_dir)
    return base.model_copy(update=update)


def run_row(client: dict, strategy: dict, other: dict) -> dict[str, float]:
    sums: dict[str, list[float]] = defaultdict(list)
    for seed in SEEDS:
        result = run_simulation(configured(seed, client, strategy, other, False), write=False)
        ev = result.history.events[-1].evaluation
        for h in HOSPITALS:
            for key in ("accuracy", "finetuned_accuracy", "ditto_accuracy"):
                if key in ev[h]:
                    sums[f"{h}/{key}"].append(ev[h][key])
        sums["all"].append(result.final["accuracy"])
    return {k: statistics.mean(v) for k, v in sums.items()}


def references() -> tuple[dict[str, float], dict[str, float]]:
    """Pooled and local-only (each hospital's model on its own test split), same recipe."""
    pooled, local = defaultdict(list), defaultdict(list)
    for seed in SEEDS:
        result = run_simulation(configured(seed, {}, {"name": "fedavg"}, {}, True), write=False)
        assert result.comparison is not None
        for row in result.comparison.rows:
            pooled[row.institution].append(row.pooled)
            local[row.institution].append(row.local_only)
    return ({h: statistics.mean(v) for h, v in pooled.items()},
            {h: statistics.mean(v) for h, v in local.items()})


def line(label: str, per: dict[str, float], flamby: str) -> str:
    cells = " | ".join(f"{per[h]:.3f}" for h in HOSPITALS)
    mean = statistics.mean(per[h] for h in HOSPITALS)
    return f"| {label} | {cells} | **{mean:.3f}** | {flamby} |"


def main() -> None:
    ref = flamby_means()
    print("| strategy (FLamby's settings where FLamby ran it) | " + " | ".join(HOSPITALS)
          + " | mean of 4 | FLamby mean |")
    print("|---|" + "---:|" * (len(HOSPITALS) + 2))
    pooled, local = references()
    print(line("pooled (reference), lr 0.01", pooled, f"{ref['Pooled Training']:.3f}"))
    print(line("local-only, own test split, lr 0.01", local, "—"), flush=True)
    for label, method, client, strategy, other in ROWS:
        res = run_row(client, strategy, other)
        flamby = f"{ref[method]:.3f}" if method else "—"
        print(line(label, {h: res[f"{h}/accuracy"] for h in HOSPITALS}, flamby), flush=True)
        for key, name in (("finetuned_accuracy", "  ↳ fine-tuned locally (personal)"),
                          ("ditto_accuracy", "  ↳ Ditto personal models")):
            if f"{HOSPITALS[0]}/{key}" in res:
                print(line(name, {h: res[f"{h}/{key}"] for h in HOSPITALS}, "—"), flush=True)


if __name__ == "__main__":
    main()
