"""FedProx, SCAFFOLD and FedNova equal their defining formulas, through the round loop."""

import numpy as np
import pytest

from fedsilo.algorithms.client_work import CONTROL
from fedsilo.algorithms.fedavg import fedavg, fedprox
from fedsilo.algorithms.fednova import fednova
from fedsilo.algorithms.scaffold import scaffold
from fedsilo.core.params import split_prefixed
from fedsilo.core.rng import derive_seed, generator
from fedsilo.core.trainer import Regularizer, TrainConfig
from fedsilo.engine.drivers import train
from fedsilo.engine.flow import RunSettings
from fedsilo.errors import ConfigError
from tests.algorithms.test_fedavg_math import binary_data
from tests.conftest import federation

SEED = 5
SIZES = ((30, 1), (90, 2), (15, 3), (50, 4))


def _run(strategy, datas, rounds, kind="logistic_regression"):
    transport, clients = federation(datas, strategy, kind=kind, seed=SEED)
    initial = clients["c0"].trainer.initial_params()
    history = train(strategy, transport, initial, RunSettings("r", SEED, rounds=rounds))
    return history, clients, initial


def _fit_rng(cid, rnd=1):
    return generator(derive_seed(SEED, "client"), rnd, cid, "fit")


def test_fedprox_with_mu_zero_is_fedavg_bit_for_bit():
    datas = [binary_data(n, s) for n, s in SIZES]
    cfg = {"epochs": 2, "batch_size": 8, "lr": 0.1}
    avg, _, _ = _run(fedavg(cfg), datas, 3, "mlp")
    prox, _, _ = _run(fedprox(cfg, mu=0.0), datas, 3, "mlp")
    for name in avg.params:
        np.testing.assert_array_equal(prox.params[name], avg.params[name])


def test_proximal_term_adds_mu_times_distance_to_the_gradient():
    data = binary_data(20, 9)
    _, clients, initial = _run(fedavg({"epochs": 1}), [data], 0)
    trainer = clients["c0"].trainer
    anchor = {n: p + 0.5 for n, p in initial.items()}
    cfg = TrainConfig(epochs=None, steps=1, batch_size=20, lr=0.1)  # one full-batch step
    got, _, _ = trainer.fit(initial, cfg, generator(0), Regularizer(2.0, anchor))

    grads, _, _ = trainer.gradient(initial)
    for n in initial:
        want = initial[n] - 0.1 * (grads[n] + 2.0 * (initial[n] - anchor[n]))
        np.testing.assert_allclose(got[n], want, rtol=1e-5, atol=1e-6)


def test_fedprox_pulls_local_models_towards_the_global_model():
    datas = [binary_data(n, s) for n, s in SIZES]
    cfg = {"epochs": 5, "batch_size": 8, "lr": 0.2}
    avg, _, initial = _run(fedavg(cfg), datas, 1)
    prox, _, _ = _run(fedprox(cfg, mu=5.0), datas, 1)
    moved = {k: sum(float(np.linalg.norm(h.params[n] - initial[n])) for n in initial)
             for k, h in (("avg", avg), ("prox", prox))}
    assert moved["prox"] < 0.8 * moved["avg"]


def test_scaffold_control_variates_follow_option_two():
    """Round 1 (c = c_i = 0): y_i is plain local SGD, c_i⁺ = (θ - y_i)/(K η), and the server's
    c = (|S|/N) mean(c_i⁺) with everyone sampled; θ' = θ - mean(θ - y_i) (uniform)."""
    datas = [binary_data(n, s) for n, s in SIZES]
    cfg = {"epochs": None, "steps": 7, "batch_size": 8, "lr": 0.1}
    history, clients, initial = _run(scaffold(cfg), datas, 1)

    deltas = {}
    for cid, client in clients.items():
        y, _, _ = client.trainer.fit(initial, TrainConfig(**cfg), _fit_rng(cid))
        deltas[cid] = {n: initial[n] - y[n] for n in initial}
        for n in initial:
            np.testing.assert_allclose(client.state["scaffold_c"][n], deltas[cid][n] / 0.7,
                                       rtol=1e-4, atol=1e-6)
    c = history.state.work_state
    for n in initial:
        mean_delta = np.mean([d[n] for d in deltas.values()], axis=0)
        np.testing.assert_allclose(history.params[n], initial[n] - mean_delta, rtol=1e-5,
                                   atol=1e-6)
        np.testing.assert_allclose(c[n], np.mean([cl.state["scaffold_c"][n]
                                                  for cl in clients.values()], axis=0),
                                   rtol=1e-4, atol=1e-6)


def test_scaffold_server_variate_stays_the_mean_of_all_clients_under_sampling():
    """c = (1/N) Σ_i c_i over *all* N institutions, including those not sampled (c_i = 0 for
    one never asked, unchanged for one skipped)."""
    datas = [binary_data(n, s) for n, s in SIZES]
    cfg = {"epochs": None, "steps": 5, "batch_size": 8, "lr": 0.1}
    history, clients, initial = _run(scaffold(cfg, fraction=0.5), datas, 6)
    for n in initial:
        all_ci = [cl.state.get("scaffold_c", {}).get(n, np.zeros_like(initial[n]))
                  for cl in clients.values()]
        np.testing.assert_allclose(history.state.work_state[n], np.mean(all_ci, axis=0),
                                   rtol=1e-4, atol=1e-6)
    assert sum("scaffold_c" in cl.state for cl in clients.values()) >= 2


def test_scaffold_with_one_institution_is_fedavg():
    """With a single institution c = c_1 after every round, so the correction c - c_1 is 0."""
    data = binary_data(40, 3)
    cfg = {"epochs": None, "steps": 6, "batch_size": 8, "lr": 0.1}
    sc, _, _ = _run(scaffold(cfg), [data], 4)
    avg, _, _ = _run(fedavg(cfg), [data], 4)
    for n in avg.params:
        np.testing.assert_allclose(sc.params[n], avg.params[n], rtol=1e-5, atol=1e-6)


def test_scaffold_task_without_control_variate_is_refused():
    data = binary_data(20, 1)
    _, clients, initial = _run(fedavg({"epochs": 1}), [data], 0)
    from fedsilo.core.messages import FitTask, Task, TaskKind

    task = Task("r", 1, 0, TaskKind.FIT, "c0", initial, {"epochs": 1},
                body=FitTask("scaffold"))
    reply = clients["c0"].handle(task)
    assert reply.error is not None and "control variate" in reply.error.reason


def test_fednova_is_fedavg_when_local_work_is_equal():
    datas = [binary_data(40, s) for s in (1, 2, 3)]
    cfg = {"epochs": 2, "batch_size": 8, "lr": 0.1}
    nova, _, _ = _run(fednova(cfg), datas, 2)
    avg, _, _ = _run(fedavg(cfg), datas, 2)
    for n in avg.params:
        np.testing.assert_allclose(nova.params[n], avg.params[n], rtol=1e-5, atol=1e-6)


def test_fednova_normalises_unequal_local_work():
    """θ' = θ - τ_eff Σ p_i Δ_i/τ_i, τ_eff = Σ p_i τ_i, p_i = n_i/n."""
    datas = [binary_data(n, s) for n, s in SIZES]
    cfg = {"epochs": 1, "batch_size": 8, "lr": 0.1}
    history, clients, initial = _run(fednova(cfg), datas, 1)
    n_total = sum(n for n, _ in SIZES)
    taus, normalised = [], []
    for (n, _), (cid, client) in zip(SIZES, clients.items()):
        y, _, m = client.trainer.fit(initial, TrainConfig(**cfg), _fit_rng(cid))
        taus.append(n / n_total * m["local_steps"])
        normalised.append({k: n / n_total * (initial[k] - y[k]) / m["local_steps"]
                           for k in initial})
    assert len({int(m) for m in (np.ceil(n / 8) for n, _ in SIZES)}) == 4  # unequal work
    for k in initial:
        want = initial[k] - sum(taus) * sum(d[k] for d in normalised)
        np.testing.assert_allclose(history.params[k], want, rtol=1e-4, atol=1e-6)


def test_fednova_momentum_normaliser():
    """a_i = (τ - ρ(1-ρ^τ)/(1-ρ)) / (1-ρ) (FedNova eq. 9) is reported by the client."""
    data = binary_data(32, 1)
    strategy = fednova({"epochs": None, "steps": 4, "batch_size": 8, "lr": 0.1,
                        "momentum": 0.5})
    history, _, _ = _run(strategy, [data], 1)
    rho, tau = 0.5, 4
    want = (tau - rho * (1 - rho**tau) / (1 - rho)) / (1 - rho)
    assert history.events[0].metrics["client_work"]["tau_eff"] == pytest.approx(want)


def test_sklearn_trainer_refuses_proximal_terms():
    from fedsilo.client.sklearn_trainer import SklearnTrainer

    data = binary_data(20, 1)
    trainer = SklearnTrainer(data)
    params = trainer.initial_params()
    with pytest.raises(ConfigError, match="PyTorch"):
        trainer.fit(params, TrainConfig(), generator(0), Regularizer(0.1, params))


def test_split_prefixed_round_trip():
    params = {"w": np.ones(2), CONTROL + "w": np.zeros(2)}
    rest, found = split_prefixed(params, CONTROL)
    assert list(rest) == ["w"] and list(found) == ["w"]


def test_a_trainer_without_the_regularizer_argument_still_trains_fedavg():
    """Trainers written to the first Trainer protocol (fit(params, cfg, rng)) keep working."""
    from fedsilo.algorithms.client_work import local_training

    class Shift:
        def fit(self, params, cfg, rng):
            return {k: v + 1.0 for k, v in params.items()}, 3, {}

    params = {"w": np.zeros(2)}
    delta, n, _ = local_training(Shift(), params, {"epochs": 1}, generator(0), {})
    np.testing.assert_array_equal(delta["w"], [-1.0, -1.0])
    assert n == 3
