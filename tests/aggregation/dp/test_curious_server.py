"""Differential privacy against the curious server, which knows everything it sent (the run
seed, the cohort) and sees every sum it is given. The attacks that worked before:

- DP-SGD's Poisson sampling came from the run seed (and its noise from torch's default
  generator, whose seed is public): the server could replay which rows every step used, so
  subsampling amplified nothing; now two fits from the same run seed differ.
- The accountant took q = strategy.fraction, while the sampler draws at least min_clients from
  the public seed: ε was understated; now q = 1 (the cohort is public).
- A distributed-DP round with fewer than m = min_contributors survivors was unmasked and
  committed with less noise than accounted; now it is aborted before the unmasking.
"""

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from fedsilo.aggregation.base import find_staged
from fedsilo.aggregation.build import build_aggregator
from fedsilo.aggregation.dp.accountant import Accountant
from fedsilo.algorithms.fedavg import fedavg
from fedsilo.algorithms.sampling import UniformSampler, cohort_size
from fedsilo.client.client import Client
from fedsilo.client.dp_sgd import DPSGD, LocalDP
from fedsilo.client.models import build_model
from fedsilo.client.policy import PolicyRefused, SitePolicy
from fedsilo.client.torch_trainer import TorchTrainer
from fedsilo.config.build import (
    aggregator_spec,
    build_strategy,
    client_settings,
    privacy_accountant,
)
from fedsilo.config.schema import load_config, parse_config
from fedsilo.core.messages import ErrorInfo, Reply, Task, TaskKind
from fedsilo.core.rng import generator
from fedsilo.engine.drivers import train
from fedsilo.engine.flow import RunSettings
from fedsilo.errors import ConfigError
from fedsilo.simulation.run import run_simulation
from fedsilo.transport.inprocess import InProcessTransport
from tests.algorithms.test_fedavg_math import binary_data
from tests.conftest import EXAMPLES

# --- local DP-SGD: sampling and noise the server cannot replay ------------------------------

ROWS, BATCH = 200, 4  # heart-disease settings: ~200 training rows, batch 4 (q = 0.02)


def heart_mlp(**privacy):
    cfg = load_config(EXAMPLES / "heart_disease" / "heart_disease_mlp.toml")
    return cfg.model_copy(update={
        "run": cfg.run.model_copy(update={"compare": False, "rounds": 1}),
        "privacy": cfg.privacy.model_copy(update=privacy)})


def dp_fit(deterministic=False):
    """One DP-SGD fit on a model whose loss has no gradient, so that its change is the noise
    alone; returns (the rows every step sampled, the noise). The task's generator is the one
    the server can rebuild (run seed, round, institution); torch's global generator is reset
    to its public default, as in a fresh process."""
    spec = LocalDP(epsilon=1.0, delta=1e-5, max_grad_norm=1.0, rounds=15,
                   deterministic=deterministic)
    dp = DPSGD(spec, ROWS, BATCH, epochs=1)
    model = build_model("logistic_regression", 3, 1, "binary", seed=0)
    before = torch.nn.utils.parameters_to_vector(model.parameters()).detach().clone()
    x, sampled = torch.ones(ROWS, 3), []

    def objective(module, idx):
        sampled.append(idx.tolist())
        return module(x[idx]).sum() * 0.0

    task_rng = generator(42, 3, "cleveland", "fit")  # what Client.handle derives
    with torch.random.fork_rng():
        torch.manual_seed(torch.initial_seed())
        dp.fit(model, lambda ps: torch.optim.SGD(ps, lr=1.0), objective, ROWS, task_rng)
    after = torch.nn.utils.parameters_to_vector(model.parameters()).detach()
    return sampled, after - before


def test_the_server_cannot_replay_dp_sgd_sampling_or_noise():
    """Attack: the server reruns the fit from the run seed it sent. Before, it got the same
    Poisson masks (and, from torch's default seed, the same noise); now neither."""
    (rows_a, noise_a), (rows_b, noise_b) = dp_fit(), dp_fit()
    assert len(rows_a) == len(rows_b) == ROWS // BATCH
    assert rows_a != rows_b
    assert not torch.equal(noise_a, noise_b) and noise_a.abs().min() > 0


def test_deterministic_noise_reproduces_dp_sgd_in_simulation_only():
    (rows_a, noise_a), (rows_b, noise_b) = dp_fit(True), dp_fit(True)
    assert rows_a == rows_b and torch.equal(noise_a, noise_b)
    cfg = heart_mlp(mode="local", local_epsilon={"*": 3.0}, deterministic_noise=True)
    local = client_settings(cfg)["dp_local"]
    assert local["deterministic"] is True
    setup = {"strategy": "fedavg", "model": {"kind": "mlp"}, "aggregator": {}}
    with pytest.raises(PolicyRefused, match="refuses deterministic_noise"):  # a kit's default
        SitePolicy(secure="none").check_fit(setup, {"dp_local": local}, 1, 0, "cleveland")
    SitePolicy(secure="none").check_fit(setup, {"dp_local": {**local, "deterministic": False}},
                                        1, 0, "cleveland")


def test_local_dp_runs_with_one_seed_differ_unless_deterministic():
    def final(**extra):
        cfg = heart_mlp(mode="local", local_epsilon={"*": 3.0}, **extra)
        return run_simulation(cfg, write=False).history.params

    a, b = final(), final()
    assert any(not np.array_equal(a[n], b[n]) for n in a)
    a, b = final(deterministic_noise=True), final(deterministic_noise=True)
    assert all(np.array_equal(a[n], b[n]) for n in a)


# --- central and distributed DP: the cohort is public ---------------------------------------

def dp_config(fraction, min_clients, mode="central", **privacy):
    raw = {"data": {"task": "binary", "target": "y"}, "model": {"kind": "logistic_regression"},
           "strategy": {"fraction": fraction, "min_clients": min_clients},
           "privacy": {"mode": mode, "noise_multiplier": 1.0, **privacy}}
    if mode == "distributed":
        raw["aggregation"] = {"secure": "secagg", "threshold": 2}
        raw["data"]["levels"] = {"y": [0, 1]}  # the classes, summed securely at preparation
    return parse_config(raw, Path("."))


@pytest.mark.parametrize("fraction, institutions, min_clients",
                         [(0.1, 10, 3), (0.3, 7, 1), (0.5, 4, 1), (0.05, 100, 2),
                          (0.25, 20, 8), (1.0, 4, 1)])
def test_accountant_rate_covers_the_sampler_realised_rate(fraction, institutions, min_clients):
    """Attack on the old claim: the accountant said q = fraction, the sampler drew
    max(min_clients, ceil(fraction·N)) institutions from the public seed, which anyone can
    replay. Now every round counts fully (q = 1), in the session's accountant and in the
    server's noise layer."""
    cfg = dp_config(fraction, min_clients)
    pool = [f"i{k:03d}" for k in range(institutions)]
    sampler = UniformSampler(fraction, min_clients)
    realised = cohort_size(institutions, fraction, min_clients) / institutions
    cohort = sampler.sample(pool, 5, 42)
    assert len(cohort) / institutions == realised
    assert sampler.sample(pool, 5, 42) == cohort  # the server (and the run store) knows it
    layer = build_aggregator(aggregator_spec(cfg, institutions))
    for accountant in (privacy_accountant(cfg), noise_layer(layer).accountant):
        assert accountant.sampling_rate == 1.0 >= realised
        assert accountant.epsilon(10) == Accountant(1.0, 1.0, 1e-5).epsilon(10)
        assert accountant.epsilon(10) >= Accountant(1.0, realised, 1e-5).epsilon(10)


def noise_layer(layer):
    while not hasattr(layer, "accountant"):
        layer = layer.inner
    return layer


@pytest.mark.parametrize("mode", ["central", "distributed"])
def test_a_dp_round_samples_and_needs_min_contributors(mode):
    cfg = dp_config(0.1, 1, mode=mode, min_contributors=4)
    strategy = build_strategy(cfg)
    assert strategy.min_replies == strategy.sampler.min_clients == 4
    assert len(strategy.sampler.sample([f"i{k}" for k in range(10)], 1, 0)) == 4
    with pytest.raises(ConfigError, match="min_contributors = 4 with 3 institution"):
        cfg.check_institutions(3)


# --- distributed DP: fewer than m survivors is never unmasked --------------------------------

NAMES = [f"inst{i}" for i in range(7)]
M = 6  # noise shares sized for 6 contributors; SecAgg (threshold 4) would survive 2 dropouts


class Spy:
    """Records the stages an institution is asked to run; `drops`: it drops out at the fit."""

    def __init__(self, client, asked, drops=False):
        self.client, self.asked, self.drops = client, asked, drops

    def handle(self, task: Task) -> Reply:
        if task.kind is TaskKind.STAGE:
            self.asked.append(task.stage.stage)
        if task.kind is TaskKind.FIT and self.drops:
            return Reply(task.task_id, self.client.client_id, task.round, task.model_version,
                         0, error=ErrorInfo("transport_error", "connection lost"))
        return self.client.handle(task)


SECURE = {"secagg": ({"protocol": "secagg", "threshold": 4, "neighbours": None}, "unmask"),
          "ckks": ({"protocol": "ckks"}, "decrypt")}


def distributed_round(secure, dropped):
    """One distributed-DP round over 7 institutions; returns (history, stages asked)."""
    spec = {"layer": "mean", "weighted": False, "secure": SECURE[secure][0],
            "privacy": {"mode": "distributed", "noise_multiplier": 1.0, "clip_norm": 1.0,
                        "delta": 1e-5, "min_contributors": M, "bit_stddev": 0.0}}
    server: dict[str, bytes] = {}  # CKKS: per-round keys; every party uses the simulated CA
    institution: dict[str, bytes] = {}
    strategy = dataclasses.replace(fedavg({"epochs": 1, "batch_size": 16, "lr": 0.1}),
                                   aggregator=build_aggregator(spec, server))
    model = build_model("logistic_regression", 6, 1, "binary", seed=3)
    asked: list[str] = []
    handlers = {}
    for k, name in enumerate(NAMES):
        client = Client(name, TorchTrainer(model, binary_data(40 + 7 * k, k)),
                        build_aggregator(spec, institution))
        handlers[name] = Spy(client, asked, drops=name in dropped)
    initial = handlers[NAMES[0]].client.trainer.initial_params()
    history = train(strategy, InProcessTransport(handlers), initial, RunSettings("r", 5, 1))
    return history, asked


@pytest.mark.parametrize("secure", sorted(SECURE))
def test_distributed_round_with_fewer_than_m_survivors_is_not_committed(secure):
    """Attack: institutions drop out (or the server drops their replies) until 5 of 7 are
    left: the secure sum could still be revealed, but it carries 5 of the 6 noise shares the
    ε is accounted for. Before, the server unmasked (or had it decrypted) and committed it;
    now the round aborts before that stage is even asked for."""
    reveal = SECURE[secure][1]
    history, asked = distributed_round(secure, {"inst1", "inst4"})
    event = history.events[0]
    assert event.version == 0 and history.state.version == 0
    assert "5 contributions carry 5 of the 6 noise shares" in event.metrics["aborted"]
    assert reveal not in asked
    history, asked = distributed_round(secure, {"inst4"})  # 6 survivors: committed
    assert history.events[0].version == 1 and reveal in asked
    assert history.events[0].metrics["aggregator"]["contributions"] == M


def test_noise_share_layer_is_staged_only_above_a_secure_sum():
    spec = {"layer": "mean", "weighted": False,
            "privacy": {"mode": "distributed", "noise_multiplier": 1.0, "clip_norm": 1.0,
                        "delta": 1e-5, "min_contributors": 2}}
    assert find_staged(build_aggregator(spec)) is None
    secure = {**spec, "secure": {"protocol": "secagg", "threshold": 2, "neighbours": None}}
    assert find_staged(build_aggregator(secure)).post_stages == ("unmask",)
