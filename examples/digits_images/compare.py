"""FedAvg vs FedProx vs local-only vs pooled for the CNN on digit images at 5 non-IID sites,
with BatchNorm averaged or kept at each site (FedBN, Li et al. ICLR 2021).

Every row trains the same CNN (digits_cnn.py) from the same seed on the same image folders
(prepare_data.py; Dirichlet(0.3) labels) with the same client work (1 epoch, batch 16,
lr 0.05) for the same rounds; accuracy is on each site's held-out 25 %, weighted by test
images. "local-only" trains one model per site on its own images; "pooled" trains on all
images in one place (possible only in simulation).

    python examples/digits_images/prepare_data.py
    python examples/digits_images/compare.py [ROUNDS]        # default 20
"""

from __future__ import annotations

import sys
from pathlib import Path

from fedsilo.config.schema import RunConfig, load_config
from fedsilo.simulation.run import run_simulation

HERE = Path(__file__).resolve().parent
ROWS = (("FedAvg", "fedavg", False, "average"),
        ("FedProx μ=0.01", "fedprox", False, "average"),
        ("FedAvg, BatchNorm averaged", "fedavg", True, "average"),
        ("FedAvg, BatchNorm local (FedBN)", "fedavg", True, "local"))


def config(strategy: str, batchnorm: bool, rule: str, rounds: int) -> RunConfig:
    cfg = load_config(HERE / "digits_images.toml")
    model = cfg.model.model_copy(update={"args": {**cfg.model.args, "batchnorm": batchnorm},
                                         "batchnorm": rule})
    return cfg.model_copy(update={
        "run": cfg.run.model_copy(update={"rounds": rounds}), "model": model,
        "strategy": cfg.strategy.model_copy(update={"name": strategy}),
        "store": cfg.store.model_copy(update={"enabled": False})})


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    sys.path.insert(0, str(HERE))  # digits_cnn, as `fedsilo run` imports it
    print(f"CNN on digit images, 5 sites, Dirichlet(0.3), {rounds} rounds; accuracy on the "
          f"sites' held-out images (weighted)")
    print("| run | federated | local-only (own test) | local-only (all tests) | pooled |")
    print("|---|---:|---:|---:|---:|")
    for label, strategy, batchnorm, rule in ROWS:
        result = run_simulation(config(strategy, batchnorm, rule, rounds), write=False)
        assert result.comparison is not None
        c = result.comparison.overall
        print(f"| {label} | {c.federated:.3f} | {c.local_only:.3f} | "
              f"{c.local_only_everywhere:.3f} | {c.pooled:.3f} |", flush=True)


if __name__ == "__main__":
    main()
