"""The heart disease vertical example with each protocol: Hetero-LR (logistic regression,
CKKS), split learning (MLP bottoms, noise 0 and 0.5 on activations) and column-split XGBoost
trees; accuracy of the label holder alone, the vertical model and the pooled joined table on
the same held-out shared patients, and the bytes that crossed between the parties.

    python examples/heart_vertical/compare.py
"""

from __future__ import annotations

from pathlib import Path

from fedsilo.config.schema import RunConfig, load_config
from fedsilo.simulation.vertical import run_vertical

HERE = Path(__file__).resolve().parent
ROWS = (("Hetero-LR (logistic regression, CKKS)", "logistic_regression", 0.0),
        ("split learning (MLP bottoms)", "mlp", 0.0),
        ("split learning, noise 0.5 on activations", "mlp", 0.5),
        ("XGBoost, column split (20 trees)", "xgboost", 0.0))


def config(kind: str, noise: float) -> RunConfig:
    cfg = load_config(HERE / "heart_vertical.toml")
    assert cfg.vertical is not None
    return cfg.model_copy(update={
        "model": cfg.model.model_copy(update={"kind": kind, "hidden": [16]}),
        "run": cfg.run.model_copy(update={"rounds": 20}),
        "vertical": cfg.vertical.model_copy(update={"noise": noise})})


def main() -> None:
    print("| protocol | label holder alone | vertical | pooled (joined table) | "
          "bytes between parties |")
    print("|---|---:|---:|---:|---:|")
    for label, kind, noise in ROWS:
        r = run_vertical(config(kind, noise), write=False)
        acc = {k: m["accuracy"] for k, m in r.metrics.items()}
        sent = f"{sum(r.wire.values()):,}" if r.wire else "(XGBoost's tracker)"
        print(f"| {label} | {acc['label holder alone']:.3f} | {acc['vertical']:.3f} | "
              f"{acc['pooled']:.3f} | {sent} |", flush=True)


if __name__ == "__main__":
    main()
