"""Builds strategies, schemas and the run setup (model, aggregator, preprocessing specs) from a
validated config. The setup travels in every task, so institutions build what the server
built."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import pandas as pd

from fedsilo.aggregation.build import build_aggregator
from fedsilo.algorithms.asynchronous import fedasync, fedbuff
from fedsilo.algorithms.base import Strategy
from fedsilo.algorithms.commit import CommitRule
from fedsilo.algorithms.registry import registered
from fedsilo.algorithms.sampling import Stragglers, UniformSampler
from fedsilo.algorithms.staleness import Staleness
from fedsilo.config.schema import CommitSection, RunConfig
from fedsilo.core.rng import derive_seed
from fedsilo.data.arrays import ArrayData, channel_names
from fedsilo.data.preprocessing import Preprocessor
from fedsilo.data.schema import Schema
from fedsilo.engine.clock import Clock, VirtualClock, WallClock
from fedsilo.errors import ConfigError
from fedsilo.optim import sgd


def model_spec(cfg: RunConfig) -> dict[str, Any]:
    """What the setup says about the model, and about your own loss ([client] loss) and
    metrics ([evaluation] metrics), which build the trainer with it: institutions import them
    by path if their site policy lists them. `batchnorm`, `loss` and `metrics` appear only
    when set, so the setups (and run ids) of runs without them are unchanged.

    Raises:
        ConfigError: a loss with a scikit-learn model (it trains with its own loss).
    """
    seed = derive_seed(cfg.run.seed, "model")
    if cfg.model.kind == "xgboost":  # trees: XGBoost's parameters and boosting rounds
        return {"kind": "xgboost", "params": dict(cfg.model.params),
                "rounds": cfg.run.rounds, "seed": seed}
    if cfg.model.factory is not None:  # your own model: by import path, built under `seed`
        spec = {"factory": cfg.model.factory, "args": dict(cfg.model.args),
                "framework": cfg.model.framework, "seed": seed}
    else:
        spec = {"kind": cfg.model.kind, "framework": cfg.model.framework,
                "hidden": list(cfg.model.hidden), "seed": seed}
    if cfg.model.batchnorm != "average":
        spec["batchnorm"] = cfg.model.batchnorm
    if cfg.client.loss is not None:
        if cfg.model.framework != "torch":
            raise ConfigError("client.loss applies to PyTorch models; a scikit-learn "
                              "estimator trains with its own loss")
        spec["loss"] = cfg.client.loss
    if cfg.evaluation.metrics:
        spec["metrics"] = list(cfg.evaluation.metrics)
    return spec


def privacy_spec(cfg: RunConfig, institutions: int) -> dict[str, Any] | None:
    """The DP part of the aggregator, or None. Institution-level DP bounds each institution's
    influence, so the mean is unweighted (every clipped update counts once). No sampling rate:
    the cohort is public, so the accountant takes q = 1 (aggregation/dp/accountant)."""
    p = cfg.privacy
    if p.mode not in ("central", "distributed"):
        return None
    return {"mode": p.mode, "noise_multiplier": p.noise_multiplier, "clip_norm": p.clip_norm,
            "target_quantile": p.target_quantile if p.adaptive_clipping else None,
            "clip_learning_rate": p.clip_learning_rate,
            "bit_stddev": p.clip_count_stddev or max(1.0, institutions / 20),
            "delta": p.delta, "min_contributors": min_contributors(cfg),
            "deterministic": cfg.run.seed if p.deterministic_noise else None}


def min_contributors(cfg: RunConfig) -> int:
    """m: privacy.min_contributors, default strategy.min_clients. Distributed noise shares are
    sized so that m of them add up to the accounted noise."""
    return cfg.privacy.min_contributors or max(cfg.strategy.min_clients, 1)


def min_replies(cfg: RunConfig) -> int:
    """The fewest institutions a round samples and needs: strategy.min_clients, raised to m
    under central or distributed DP (a round of fewer is aborted, not committed)."""
    if cfg.privacy.mode not in ("central", "distributed"):
        return cfg.strategy.min_clients
    return max(cfg.strategy.min_clients, min_contributors(cfg))


def privacy_accountant(cfg: RunConfig) -> Any:
    """The accountant of the run's central or distributed DP (q = 1: the cohort is public),
    or None."""
    from fedsilo.aggregation.dp.accountant import Accountant

    p = cfg.privacy
    if p.mode not in ("central", "distributed"):
        return None
    return Accountant.public_cohort(p.noise_multiplier, p.delta)


def aggregator_spec(cfg: RunConfig, institutions: int = 1) -> dict[str, Any]:
    """The aggregator's JSON-able spec (aggregation/build.py): the short form, or with
    [[aggregation.layers]] the whole stack as a list (plus the "secure" and "privacy" it
    holds, which institutions' site policies check), checked here: a ConfigError names both
    settings of a conflict (a robust rule under DP, topk with an async strategy)."""
    from fedsilo.aggregation.build import stack_entries

    a = cfg.aggregation
    privacy = privacy_spec(cfg, institutions)
    uniform = privacy is not None or cfg.strategy.name == "scaffold"  # SCAFFOLD: uniform means
    if a.layers is not None:
        if cfg.run.mode == "async" and any(e.get("kind") == "topk" for e in a.layers):
            raise ConfigError("aggregation.layers 'topk' and run.mode = 'async' conflict: "
                              "staleness weighting rescales every array of a reply, the "
                              "sparse indices too")
        weighted = cfg.strategy.weighted and not uniform
        stack = {"layers": stack_entries(a.layers, weighted=weighted, privacy=privacy,
                                         secure=a.secure_spec(), default=a.default_bound),
                 **({"privacy": privacy} if privacy else {}),
                 **({"secure": a.secure_spec()} if a.secure != "none" else {})}
        build_aggregator(stack)  # refuses an unsound stack now, naming both layers
        return stack
    spec: dict[str, Any] = {"layer": "mean" if a.robust == "none" else a.robust,
                            "weighted": cfg.strategy.weighted and not uniform}
    if a.robust != "none":
        spec.update(trim_fraction=a.trim_fraction, byzantine=a.byzantine, select=a.select)
    if a.norm_bound is not None:
        spec["norm_bound"] = a.norm_bound
    if not a.default_bound:  # on unless switched off (aggregation/build.py: default_bound)
        spec["default_bound"] = False
    if privacy is not None:
        spec["privacy"] = privacy
    if a.secure == "ckks":
        spec["secure"] = {"protocol": "ckks"}
    elif a.secure != "none":
        spec["secure"] = {"protocol": a.secure, "threshold": a.threshold,
                          "neighbours": a.neighbours, "frac_bits": a.frac_bits,
                          "max_abs": a.max_abs, "ring_bits": a.ring_bits}
    return spec


def run_setup(cfg: RunConfig, prepare: Mapping[str, Any], preprocessor: Preprocessor,
              institutions: int = 1) -> dict[str, Any]:
    """What every task carries so an institution can build its client: how to read and split
    its data, the fitted preprocessing, the model and the aggregator's client half."""
    return {"data": dict(prepare), "preprocessor": preprocessor.to_dict(),
            "model": model_spec(cfg), "aggregator": aggregator_spec(cfg, institutions),
            "strategy": cfg.strategy.name}


def build_strategy(cfg: RunConfig, setup: Mapping[str, Any] | None = None,
                   keys: Mapping[str, bytes] | None = None, institutions: int = 1) -> Strategy:
    """The strategy named in [strategy]; its tasks carry the [client] settings and `setup`.
    `keys`: the server's local key material (the CKKS public context)."""
    spec = setup["aggregator"] if setup is not None else aggregator_spec(cfg)
    if cfg.run.mode == "async":
        strategy = _async_strategy(cfg, keys, spec, institutions)
    else:
        strategy = _strategy(cfg, keys, spec)
    if setup is None:
        return strategy
    return dataclasses.replace(strategy, setup=dict(setup))


def client_settings(cfg: RunConfig) -> dict[str, Any]:
    """What every fit task tells institutions about local training: [client], local DP,
    personalisation."""
    client = {**cfg.client.train_config(), **personalization_config(cfg)}
    p = cfg.privacy
    if p.mode == "local":
        if cfg.model.framework != "torch":
            raise ConfigError("privacy.mode = 'local' (DP-SGD with Opacus) needs a torch model")
        client["dp_local"] = {"epsilon": dict(p.local_epsilon) or {"*": p.target_epsilon or 8.0},
                              "delta": p.delta, "max_grad_norm": p.max_grad_norm,
                              "rounds": cfg.run.rounds, "deterministic": p.deterministic_noise}
    return client


def _async_strategy(cfg: RunConfig, keys: Mapping[str, bytes] | None,
                    spec: Mapping[str, Any], institutions: int) -> Strategy:
    """An asynchronous run (run.mode = 'async'): FedAsync or FedBuff as [strategy] names
    them, or any other strategy (its client work and server rule) committing every
    [commit] buffer_size updates (default: as many as there are `institutions`). Under
    central or distributed DP an institution that contributed waits for the commit (at most
    one update of it per commit: the sensitivity the noise is calibrated to; each commit is
    accounted as one release)."""
    s = cfg.strategy
    aggregator = build_aggregator(spec, keys)
    barrier = cfg.clock.barrier or cfg.privacy.mode in ("central", "distributed")
    if s.name == "fedasync":
        return fedasync(client_settings(cfg), aggregator, sgd(1.0), mixing=s.mixing,
                        staleness=Staleness(s.staleness, s.staleness_a, s.staleness_b),
                        barrier=barrier,
                        max_staleness=16 if s.max_staleness is None else s.max_staleness)
    if s.name == "fedbuff":
        return fedbuff(client_settings(cfg), aggregator, sgd(s.server_lr or 1.0),
                       buffer_size=s.buffer_size,
                       staleness=Staleness(s.staleness, s.staleness_a, s.staleness_b),
                       max_staleness=s.max_staleness, barrier=barrier)
    c = cfg.commit or CommitSection()
    rule = CommitRule(c.buffer_size or max(institutions, 1), None,
                      Staleness(c.staleness, c.staleness_a, c.staleness_b), c.max_staleness,
                      barrier)
    return dataclasses.replace(_strategy(cfg, keys, spec), rule=rule,
                               sampler=UniformSampler(1.0, 1), min_replies=1, stragglers=None)


def build_clock(cfg: RunConfig, default: str = "wall") -> Clock:
    """The clock [clock] kind names, else `default`: virtual (simulated seconds) or wall."""
    c = cfg.clock
    if (c.kind or default) == "wall":
        return WallClock()
    return VirtualClock(c.seconds_per_example, dict(c.speeds), c.delay, c.delay_mean,
                        dict(c.delays), cfg.run.seed)


def _strategy(cfg: RunConfig, keys: Mapping[str, bytes] | None,
              spec: Mapping[str, Any]) -> Strategy:
    """The synchronous strategy [strategy] names, built by its registry line with its typed
    hyper-parameters (algorithms/registry.py).

    Raises:
        ConfigError: an asynchronous strategy (build_async_strategy builds those).
    """
    s = cfg.strategy
    entry = registered(s.name)
    client = client_settings(cfg)
    aggregator = build_aggregator(spec, keys)
    if entry.build is None:
        raise ConfigError(f"strategy '{s.name}' is asynchronous: run.mode = 'async' builds it")
    stragglers = Stragglers(s.stragglers, s.straggler_policy) if s.stragglers else None
    common: dict[str, Any] = {"fraction": s.fraction, "min_clients": min_replies(cfg),
                              "aggregator": aggregator, "stragglers": stragglers}
    # a section copied under another name keeps its keys: the strategy's own only
    takes = entry.params.model_fields
    hyper = {k: v for k, v in s.hyper.model_dump().items() if k in takes}
    return entry.build(client, **entry.params.model_validate(hyper).model_dump(), **common)


def personalization_config(cfg: RunConfig) -> dict[str, Any]:
    """The [personalization] settings as the client config carries them."""
    p, out = cfg.personalization, {}
    if p.finetune_epochs:
        out["finetune"] = {"epochs": p.finetune_epochs, "lr": p.finetune_lr}
    if p.ditto_lambda is not None:
        out["ditto"] = {"lambda": p.ditto_lambda, "epochs": p.ditto_epochs, "lr": p.ditto_lr}
    if out and cfg.model.framework != "torch":
        raise ConfigError("[personalization] needs a torch model (the scikit-learn trainer "
                          "has no proximal term)")
    return out


def build_schema(cfg: RunConfig, sample: pd.DataFrame | ArrayData) -> Schema:
    """The data schema: declared numeric columns, or every column not otherwise named; for
    array data (data.shape, or arrays in `sample`), one feature per channel."""
    d = cfg.data
    if d.shape is not None or isinstance(sample, ArrayData):
        shape = (tuple(d.shape) if d.shape is not None
                 else sample.shape if isinstance(sample, ArrayData) else ())
        return Schema(d.target, d.task, channel_names(shape), positive_above=d.positive_above,
                      scale_target=d.scale_target, shape=shape)
    exclude = list(d.exclude)
    split_column = d.partition.column if d.partition is not None else None
    if split_column and split_column not in d.categorical:
        exclude.append(split_column)
    skip = {d.target, *d.categorical, *exclude}
    numeric = d.numeric if d.numeric is not None else [c for c in sample.columns if c not in skip]
    return Schema(d.target, d.task, tuple(numeric), tuple(d.categorical),
                  positive_above=d.positive_above, scale_target=d.scale_target)
