"""Server optimizers match PyTorch's reference implementations step for step."""

import numpy as np
import pytest
import torch

from fedsilo.errors import ConfigError
from fedsilo.optim import adam, apply_step, sgd


def run_ours(opt, grads, p0):
    params, state = {"p": p0.copy()}, opt.init({"p": p0})
    for g in grads:
        step, state = opt.update({"p": g}, state, params)
        params = apply_step(params, step)
    return params["p"]


def run_torch(make, grads, p0):
    p = torch.nn.Parameter(torch.from_numpy(p0.copy()))
    opt = make([p])
    for g in grads:
        p.grad = torch.from_numpy(g.copy())
        opt.step()
    return p.detach().numpy()


GRADS = [np.random.default_rng(i).normal(size=7) for i in range(6)]
P0 = np.random.default_rng(99).normal(size=7)


def test_adam_matches_torch():
    ours = run_ours(adam(0.05, 0.9, 0.99, 1e-6), GRADS, P0)
    ref = run_torch(lambda ps: torch.optim.Adam(ps, lr=0.05, betas=(0.9, 0.99), eps=1e-6),
                    GRADS, P0)
    np.testing.assert_allclose(ours, ref, rtol=1e-10, atol=1e-12)


def test_momentum_matches_torch():
    ours = run_ours(sgd(0.1, momentum=0.9), GRADS, P0)
    ref = run_torch(lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9), GRADS, P0)
    np.testing.assert_allclose(ours, ref, rtol=1e-10, atol=1e-12)


def test_sgd_lr_one_on_delta_gives_client_mean():
    theta, mean_client = np.array([1.0, 2.0]), np.array([0.5, 3.0])
    out = run_ours(sgd(1.0), [theta - mean_client], theta)
    np.testing.assert_allclose(out, mean_client)


@pytest.mark.parametrize("make, message", [
    (lambda: sgd(0.0), "lr must be > 0"),
    (lambda: sgd(1.0, momentum=1.0), "momentum must be in"),
    (lambda: adam(0.1, beta1=1.5), "beta1 must be in"),
    (lambda: adam(0.1, eps=0), "eps must be > 0"),
])
def test_bad_hyperparameters_are_named(make, message):
    with pytest.raises(ConfigError, match=message):
        make()


def _reddi(grads, p0, lr, beta1, beta2, tau, rule):
    """Reddi et al. 2021, Algorithm 2, written out by hand (Δ = -g)."""
    x, m, v = p0.copy(), np.zeros_like(p0), np.full_like(p0, tau**2)
    for g in grads:
        delta = -g
        m = beta1 * m + (1 - beta1) * delta
        if rule == "adagrad":
            v = v + delta**2
        else:
            v = v - (1 - beta2) * delta**2 * np.sign(v - delta**2)
        x = x + lr * m / (np.sqrt(v) + tau)
    return x


@pytest.mark.parametrize("rule", ["yogi", "adagrad"])
def test_adaptive_server_optimizers_follow_reddi_algorithm_2(rule):
    from fedsilo.optim import adagrad, yogi

    opt = yogi(0.05, 0.9, 0.99, 1e-3) if rule == "yogi" else adagrad(0.05, 0.9, 1e-3)
    want = _reddi(GRADS, P0, 0.05, 0.9, 0.99, 1e-3, rule)
    np.testing.assert_allclose(run_ours(opt, GRADS, P0), want, rtol=1e-10)


def test_yogi_and_adagrad_differ_from_each_other():
    from fedsilo.optim import adagrad, yogi

    a = run_ours(yogi(0.05, 0.9, 0.99, 1e-3), GRADS, P0)
    b = run_ours(adagrad(0.05, 0.9, 1e-3), GRADS, P0)
    assert not np.allclose(a, b)


@pytest.mark.parametrize("bad", [{"lr": 0}, {"tau": 0}, {"beta1": 1.0}])
def test_yogi_rejects_out_of_range_values(bad):
    from fedsilo.optim import yogi

    with pytest.raises(ConfigError, match="yogi"):
        yogi(**bad)
