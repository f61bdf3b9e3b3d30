"""FedDyn (Acar et al., ICLR 2021) equals its definition through the round loop, trains the
heart-disease example from a config, and its config refuses keys it does not take."""

import math

import numpy as np
import pytest

from fedsilo.algorithms.fedavg import fedavg
from fedsilo.algorithms.feddyn import GRADIENT_STATE, feddyn
from fedsilo.config.schema import load_config, parse_config
from fedsilo.data.local_data import LocalData
from fedsilo.engine.drivers import train
from fedsilo.engine.flow import RunSettings
from fedsilo.errors import ConfigError
from fedsilo.simulation.run import run_simulation
from tests.conftest import EXAMPLES, federation

SEED = 3
ALPHA, LR, STEPS = 0.5, 0.05, 4
SIZES = (20, 35, 12)


def regression_data(n: int, seed: int, d: int = 3) -> LocalData:
    """A linear problem whose true weights differ per institution (heterogeneous optima)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)).astype(np.float32)
    y = (x @ rng.normal(size=d) + 0.5 * seed + 0.1 * rng.normal(size=n)).astype(np.float32)
    return LocalData(x, y, x[:4], y[:4], "regression")


def _run(strategy, datas, rounds):
    transport, clients = federation(datas, strategy, kind="linear_regression", seed=SEED)
    initial = clients["c0"].trainer.initial_params()
    history = train(strategy, transport, initial, RunSettings("r", SEED, rounds=rounds))
    return history, clients, initial


def _reference(datas, initial, cohorts):
    """FedDyn by hand (float64): full-batch GD on L_k(θ) - <g_k, θ> + α/2 ||θ - θ^{t-1}||²,
    L_k the mean squared error of θ = (w, b); g_k ← g_k - α (θ_k - θ^{t-1});
    h ← h - α/m Σ_P (θ_k - θ^{t-1}); θ ← mean_P θ_k - h/α."""
    m = len(datas)
    theta = np.concatenate([initial["0.weight"].ravel(), initial["0.bias"]]).astype(np.float64)
    xs = [np.hstack([d.x_train, np.ones((len(d.y_train), 1), np.float32)]).astype(np.float64)
          for d in datas]
    ys = [d.y_train.astype(np.float64) for d in datas]
    grads = [np.zeros_like(theta) for _ in datas]
    h = np.zeros_like(theta)
    for cohort in cohorts:
        locals_ = {}
        for k in cohort:
            tk = theta.copy()
            for _ in range(STEPS):
                loss_grad = 2.0 / len(ys[k]) * xs[k].T @ (xs[k] @ tk - ys[k])
                tk = tk - LR * (loss_grad - grads[k] + ALPHA * (tk - theta))
            grads[k] = grads[k] - ALPHA * (tk - theta)
            locals_[k] = tk
        h = h - ALPHA / m * sum(tk - theta for tk in locals_.values())
        theta = np.mean(list(locals_.values()), axis=0) - h / ALPHA
    return theta, grads


def _flat(params):
    return np.concatenate([params["0.weight"].ravel(), params["0.bias"]]).astype(np.float64)


@pytest.mark.parametrize("fraction", [1.0, 0.5])
def test_feddyn_equals_its_definition(fraction):
    """Three rounds on three institutions, every one or two of them per round (then h sums
    over the cohort but divides by all m)."""
    datas = [regression_data(n, s) for s, n in enumerate(SIZES)]
    cfg = {"epochs": None, "steps": STEPS, "batch_size": max(SIZES), "lr": LR}  # full batch
    history, clients, initial = _run(feddyn(cfg, alpha=ALPHA, fraction=fraction), datas, 3)
    cohorts = [sorted(int(c[1:]) for c in ev.participants) for ev in history.events]
    assert [len(c) for c in cohorts] == [3 if fraction == 1.0 else 2] * 3

    theta, grads = _reference(datas, initial, cohorts)
    np.testing.assert_allclose(_flat(history.params), theta, rtol=1e-4, atol=1e-5)
    for k, grad in enumerate(grads):  # the state each institution kept (zero if never asked)
        state = clients[f"c{k}"].state.get(GRADIENT_STATE)
        got = _flat(state) if state is not None else np.zeros_like(grad)
        np.testing.assert_allclose(got, grad, rtol=1e-4, atol=1e-5)
    avg, _, _ = _run(fedavg(cfg, weighted=False, fraction=fraction), datas, 3)
    assert np.linalg.norm(_flat(avg.params) - theta) > 1e-2  # the dynamic term matters


def _heart(strategy, **sections):
    cfg = load_config(EXAMPLES / "heart_disease" / "heart_disease.toml")
    raw = cfg.model_dump(exclude={"base_dir"})
    raw["run"].update(rounds=4, compare=False)
    raw["client"].update(steps=50)
    raw["strategy"] = strategy
    for name, values in sections.items():
        raw[name] = {**raw.get(name, {}), **values}
    return parse_config(raw, cfg.base_dir)


def test_feddyn_from_a_config_trains_the_heart_disease_example():
    cfg = _heart({"name": "feddyn", "alpha": 0.01})
    assert cfg.strategy.alpha == 0.01 and cfg.strategy.weighted is False  # uniform means
    result = run_simulation(cfg, write=False)
    # the initial model, evaluated the same way: one step of lr 1e-12 moves no float32 weight
    untrained = run_simulation(_heart({"name": "fedavg"}, run={"rounds": 1},
                                      client={"steps": 1, "lr": 1e-12}), write=False)
    loss, before = result.final["log_loss"], untrained.final["log_loss"]
    assert math.isfinite(loss) and loss < before - 0.02, (loss, before)
    assert result.final["accuracy"] > untrained.final["accuracy"]
    h_norms = [ev.metrics["client_work"]["feddyn_h_norm"] for ev in result.history.events]
    assert all(math.isfinite(v) for v in h_norms) and h_norms[-1] > 0


@pytest.mark.parametrize("key,value", [("mu", 0.1), ("server_lr", 0.5), ("alfa", 0.01)])
def test_a_key_feddyn_does_not_take_is_refused_by_name(key, value):
    with pytest.raises(ConfigError, match=f"'feddyn' does not take '{key}'.*feddyn takes alpha"):
        _heart({"name": "feddyn", "alpha": 0.01, key: value})


def test_alpha_must_be_positive():
    with pytest.raises(ConfigError, match=r"strategy\.alpha: Input should be greater than 0"):
        _heart({"name": "feddyn", "alpha": 0.0})
    with pytest.raises(ConfigError, match="alpha must be > 0"):
        feddyn({"epochs": 1}, alpha=-1.0)
