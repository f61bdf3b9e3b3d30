"""Personalisation: each institution ends with a model adapted to its own data. Both models
below stay inside the institution; only their test metrics are reported.

- Local fine-tuning: after federation, a few epochs of local training from the global model.
- Ditto (Li et al., "Ditto: Fair and Robust Federated Learning Through Personalization",
  ICML 2021): every round, besides its part in the global model, the institution trains a
  personal model v_i on L_i(v) + λ/2 ||v - θ||², θ the current global model. λ → ∞ gives the
  global model, λ = 0 local-only training.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from fedsilo.core.params import Params
from fedsilo.core.trainer import Regularizer, TrainConfig, Trainer


def _settings(config: Mapping[str, Any], section: Mapping[str, Any]) -> TrainConfig:
    """The task's training settings with the personalisation section's epochs / lr."""
    merged = {**config, "steps": None, "epochs": int(section.get("epochs", 1))}
    if section.get("lr") is not None:
        merged["lr"] = float(section["lr"])
    return TrainConfig.from_mapping(merged)


def ditto_round(trainer: Trainer, global_params: Params, config: Mapping[str, Any],
                rng: np.random.Generator, state: dict[str, Any]) -> dict[str, float]:
    """One round of Ditto's personal update; v_i is kept in `state["ditto"]`."""
    section = config["ditto"]
    personal = state.get("ditto") or {n: a.copy() for n, a in global_params.items()}
    reg = Regularizer(float(section["lambda"]), global_params)
    new, _, metrics = trainer.fit(personal, _settings(config, section), rng, reg)
    state["ditto"] = new
    return {"ditto_train_loss": metrics.get("train_loss", float("nan"))}


def personal_metrics(trainer: Trainer, global_params: Params, config: Mapping[str, Any],
                     rng: np.random.Generator, state: Mapping[str, Any],
                     final: bool = False) -> dict[str, float]:
    """Test metrics of the institution's personal models: `ditto_<metric>` for Ditto's v_i,
    and, on the final evaluation, `finetuned_<metric>` for the locally fine-tuned global
    model."""
    out: dict[str, float] = {}
    if "ditto" in state:
        _, m = trainer.evaluate(state["ditto"])
        out.update({f"ditto_{k}": v for k, v in m.items()})
    finetune = config.get("finetune")
    if finetune and final:
        tuned, _, _ = trainer.fit(global_params, _settings(config, finetune), rng)
        _, m = trainer.evaluate(tuned)
        out.update({f"finetuned_{k}": v for k, v in m.items()})
    return out
