"""Client work: what an institution computes from the global model and its data.

Every work returns a pseudo-gradient in the descent direction, so that one server rule,
θ ← θ + optimizer(g), covers FedAvg, FedSGD and the adaptive optimizers:

- `local_training`: g_i = θ - θ_i after local epochs/steps (McMahan et al. 2017); with
  `prox_mu` > 0 the local objective gains FedProx's μ/2 ||w - θ||² (Li et al., MLSys 2020);
- `gradient`: g_i = ∇L_i(θ), one full-batch gradient (FedSGD);
- `scaffold`: local steps corrected by c - c_i, plus the control-variate change Δc_i
  (Karimireddy et al., ICML 2020, option II); c_i stays in the institution;
- `fednova`: the delta normalised by the local work a_i, plus a_i itself (Wang et al.,
  NeurIPS 2020).

`state` is the institution's private state across rounds (it never leaves the institution).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from fedsilo.client.trainer import Regularizer, TrainConfig, Trainer
from fedsilo.core.params import Params, prefixed, split_prefixed
from fedsilo.errors import ConfigError, ProtocolError

WorkResult = tuple[Params, int, dict[str, float]]
ClientWork = Callable[[Trainer, Params, dict[str, Any], np.random.Generator, dict[str, Any]],
                      WorkResult]

CONTROL = "scaffold.c/"    # SCAFFOLD: the server's c in a task, Δc_i in a reply
NOVA_TAU = "fednova.tau"   # FedNova: the local work a_i in a reply


def model_delta(params: Params, new: Params) -> Params:
    """θ - θ_local (descent-signed), reusing the trainer's fresh arrays where it can."""
    delta = {}
    for k, p in params.items():
        out = new[k]
        if out is p or out.dtype != p.dtype or not out.flags.writeable:
            delta[k] = (p - out).astype(p.dtype, copy=False)
        else:  # the trainer handed us fresh arrays: reuse them (no 2nd model in memory)
            delta[k] = np.subtract(p, out, out=out)
    return delta


def local_training(trainer: Trainer, params: Params, config: dict[str, Any],
                   rng: np.random.Generator, state: dict[str, Any]) -> WorkResult:
    """Train locally (with FedProx's proximal term if `prox_mu` > 0), return θ - θ_local."""
    mu = float(config.get("prox_mu", 0.0))
    cfg = TrainConfig.from_mapping(config)
    if mu > 0:
        new, n, metrics = trainer.fit(params, cfg, rng, Regularizer(mu, params))
    else:  # a trainer written before regularizers existed still works
        new, n, metrics = trainer.fit(params, cfg, rng)
    return model_delta(params, new), n, metrics


def gradient(trainer: Trainer, params: Params, config: dict[str, Any],
             rng: np.random.Generator, state: dict[str, Any]) -> WorkResult:
    """Return the full-batch gradient of the local loss at θ."""
    return trainer.gradient(params)


def scaffold(trainer: Trainer, params: Params, config: dict[str, Any],
             rng: np.random.Generator, state: dict[str, Any]) -> WorkResult:
    """K local SGD steps on ∇L_i(y) - c_i + c, then (option II)
    c_i⁺ = c_i - c + (θ - y) / (K η_l); returns θ - y and Δc_i = c_i⁺ - c_i.

    Raises:
        ProtocolError: the task carries no server control variate.
        ConfigError: a client optimizer other than plain SGD.
    """
    model, c = split_prefixed(params, CONTROL)
    if set(c) != set(model):
        raise ProtocolError("scaffold: the task must carry the server control variate for "
                            "every parameter")
    cfg = TrainConfig.from_mapping(config)
    if cfg.optimizer != "sgd" or cfg.momentum:
        raise ConfigError("scaffold: the control-variate update assumes plain local SGD "
                          "(client optimizer 'sgd', momentum 0)")
    ci = state.get("scaffold_c") or {n: np.zeros_like(a) for n, a in c.items()}
    correction = {n: c[n] - ci[n] for n in c}
    new, n, metrics = trainer.fit(model, cfg, rng, Regularizer(correction=correction))
    delta = model_delta(model, new)
    k_lr = metrics["local_steps"] * cfg.lr
    ci_new = {k: (ci[k] - c[k] + delta[k] / k_lr).astype(c[k].dtype) for k in c}
    state["scaffold_c"] = ci_new
    return {**delta, **prefixed({k: ci_new[k] - ci[k] for k in c}, CONTROL)}, n, metrics


def fednova(trainer: Trainer, params: Params, config: dict[str, Any],
            rng: np.random.Generator, state: dict[str, Any]) -> WorkResult:
    """Local training, then d_i = (θ - θ_i) / a_i and a_i, where a_i = τ_i for plain SGD and
    a_i = (τ_i - ρ(1-ρ^τ_i)/(1-ρ)) / (1-ρ) with momentum ρ (FedNova, eq. 9)."""
    cfg = TrainConfig.from_mapping(config)
    new, n, metrics = trainer.fit(params, cfg, rng)
    tau, rho = metrics["local_steps"], cfg.momentum
    if cfg.optimizer != "sgd":
        raise ConfigError("fednova: the normalisation is defined for local SGD (with or "
                          "without momentum), not for client optimizer 'adam'")
    a = tau if rho == 0 else (tau - rho * (1 - rho**tau) / (1 - rho)) / (1 - rho)
    delta = model_delta(params, new)
    normalised = {k: np.divide(d, a, out=d, casting="unsafe") for k, d in delta.items()}
    metrics = {**metrics, "fednova_a": a}
    return {**normalised, NOVA_TAU: np.array([a], dtype=np.float64)}, n, metrics


CLIENT_WORKS: dict[str, ClientWork] = {"local_training": local_training, "gradient": gradient,
                                       "scaffold": scaffold, "fednova": fednova}


# per work: the prefix of the side values its replies carry besides the model update
AUX_PREFIXES: dict[str, str] = {"scaffold": CONTROL, "fednova": NOVA_TAU}


def aux_names(work: str, update: Params) -> frozenset[str]:
    """The entries of `work`'s `update` that are side values, not the model update."""
    prefix = AUX_PREFIXES.get(work)
    return frozenset(n for n in update if prefix is not None and n.startswith(prefix))


def get_client_work(name: str) -> ClientWork:
    try:
        return CLIENT_WORKS[name]
    except KeyError:
        known = sorted(CLIENT_WORKS)
        raise ConfigError(f"client work '{name}' is unknown; known: {known}") from None
