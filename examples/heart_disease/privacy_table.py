"""Accuracy vs ε on heart disease: central DP (institution level) at a few noise multipliers,
and local DP-SGD (sample level) at a few per-institution budgets; mean over seeds 42-46.

    python examples/heart_disease/privacy_table.py
"""

from __future__ import annotations

import statistics
from pathlib import Path

from fedsilo.config.schema import load_config
from fedsilo.simulation.run import run_simulation

HERE = Path(__file__).resolve().parent
SEEDS = (42, 43, 44, 45, 46)


def mean_accuracy(config: str, privacy: dict) -> tuple[float, float, float | None]:
    accs, eps = [], None
    for seed in SEEDS:
        cfg = load_config(HERE / config)
        cfg = cfg.model_copy(update={
            "run": cfg.run.model_copy(update={"compare": False, "seed": seed}),
            "privacy": cfg.privacy.model_copy(update=privacy)})
        result = run_simulation(cfg, write=False)
        accs.append(result.final["accuracy"])
        last = result.history.events[-1].metrics
        eps = last["aggregator"].get("epsilon", last["client_work"].get("dp_epsilon"))
    return statistics.mean(accs), statistics.stdev(accs), eps


def main() -> None:
    print("| DP | setting | ε (δ = 1e-5) | accuracy (mean ± sd, seeds 42-46) |")
    print("|---|---|---|---|")
    rows = [("none", "heart_disease.toml", "—", {})]
    rows += [("central, institution level", "heart_disease.toml", f"z = {z}, clip 1.0",
              {"mode": "central", "noise_multiplier": z, "clip_norm": 1.0})
             for z in (0.5, 1.0, 2.0, 4.0)]
    rows += [("local DP-SGD, sample level", "heart_disease_mlp.toml", f"ε target {e} each",
              {"mode": "local", "local_epsilon": {"*": e}, "max_grad_norm": 1.0})
             for e in (1.0, 3.0, 8.0)]
    rows.insert(5, ("none (MLP)", "heart_disease_mlp.toml", "—", {}))
    for label, config, setting, privacy in rows:
        acc, sd, eps = mean_accuracy(config, privacy)
        shown = "∞" if eps is None else f"{eps:.2f}"
        print(f"| {label} | {setting} | {shown} | {acc:.3f} ± {sd:.3f} |", flush=True)


if __name__ == "__main__":
    main()
