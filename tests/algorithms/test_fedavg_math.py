"""FedAvg and FedSGD equal their textbook definitions, through the whole round loop."""

import copy

import numpy as np
import torch

from fedsilo.algorithms.fedavg import fedavg, fedsgd
from fedsilo.core.rng import derive_seed, generator
from fedsilo.core.trainer import TrainConfig
from fedsilo.data.local_data import LocalData
from fedsilo.engine.drivers import train
from fedsilo.engine.flow import RunSettings
from tests.conftest import digits_data, federation

SEED = 3


def binary_data(n, seed, d=6):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)).astype(np.float32)
    y = (x @ rng.normal(size=d) + 0.3 * rng.normal(size=n) > 0).astype(np.float32)
    return LocalData(x, y, x[:5], y[:5], "binary", 2)


def test_fedavg_round_is_example_weighted_mean_of_client_models():
    datas = [binary_data(n, s) for n, s in ((30, 1), (90, 2), (15, 3))]
    cfg = {"epochs": 2, "batch_size": 8, "lr": 0.1}
    strategy = fedavg(cfg)
    transport, clients = federation(datas, strategy, kind="mlp", seed=SEED)
    initial = clients["c0"].trainer.initial_params()
    history = train(strategy, transport, initial, RunSettings("r", SEED, rounds=1))

    client_models, sizes = [], []
    for cid, client in clients.items():
        rng = generator(derive_seed(SEED, "client"), 1, cid, "fit")
        params, n, _ = client.trainer.fit(initial, TrainConfig(**cfg), rng)
        client_models.append(params)
        sizes.append(n)
    for name in initial:
        want = sum(n * p[name].astype(np.float64) for p, n in zip(client_models, sizes))
        np.testing.assert_allclose(history.params[name], want / sum(sizes), rtol=1e-5,
                                   atol=1e-6)


def test_fedavg_with_identical_clients_equals_local_training():
    data = binary_data(40, 7)
    cfg = {"epochs": 3, "batch_size": 40, "lr": 0.5}  # full batch: order cannot matter
    strategy = fedavg(cfg)
    transport, clients = federation([data] * 4, strategy, seed=SEED)
    initial = clients["c0"].trainer.initial_params()
    history = train(strategy, transport, initial, RunSettings("r", SEED, rounds=5))

    local = initial
    for _ in range(5):
        local, _, _ = clients["c0"].trainer.fit(local, TrainConfig(**cfg), generator(0))
    for name in initial:
        np.testing.assert_allclose(history.params[name], local[name], rtol=1e-5, atol=1e-6)


def _torch_gd_step(model, x, y, lr, loss_fn):
    model = copy.deepcopy(model)
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    opt.zero_grad()
    loss_fn(model(torch.from_numpy(x)), torch.from_numpy(y)).backward()
    opt.step()
    return {k: v.detach().numpy() for k, v in model.state_dict().items()}


def test_fedsgd_one_client_equals_one_centralized_gradient_step():
    data = digits_data(1)[0]
    strategy = fedsgd(lr=0.3)
    transport, clients = federation([data], strategy, seed=SEED)
    trainer = clients["c0"].trainer
    initial = trainer.initial_params()
    want = _torch_gd_step(trainer.model, data.x_train, data.y_train.astype(np.int64), 0.3,
                          torch.nn.CrossEntropyLoss())
    history = train(strategy, transport, initial, RunSettings("r", SEED, rounds=1))
    for name in initial:
        np.testing.assert_allclose(history.params[name], want[name], rtol=1e-5, atol=1e-6)


def test_fedsgd_uniform_and_weighted_forms():
    datas = [binary_data(n, s) for n, s in ((20, 11), (60, 12), (100, 13))]
    grads, sizes = [], []
    for weighted in (False, True):
        strategy = fedsgd(lr=0.2, weighted=weighted)
        transport, clients = federation(datas, strategy, seed=SEED)
        initial = clients["c0"].trainer.initial_params()
        if not grads:
            for c in clients.values():
                g, n, _ = c.trainer.gradient(initial)
                grads.append(g)
                sizes.append(n)
        w = np.array(sizes, float) if weighted else np.ones(len(sizes))
        history = train(strategy, transport, initial, RunSettings("r", SEED, rounds=1))
        for name in initial:
            mean = sum(wi * g[name] for wi, g in zip(w, grads)) / w.sum()
            np.testing.assert_allclose(history.params[name], initial[name] - 0.2 * mean,
                                       rtol=1e-5, atol=1e-6)


def test_weighted_fedsgd_equals_pooled_gradient_step():
    datas = [binary_data(n, s) for n, s in ((25, 21), (75, 22))]
    strategy = fedsgd(lr=0.5, weighted=True)
    transport, clients = federation(datas, strategy, seed=SEED)
    trainer = clients["c0"].trainer
    initial = trainer.initial_params()
    x = np.concatenate([d.x_train for d in datas])
    y = np.concatenate([d.y_train for d in datas])
    model = copy.deepcopy(trainer.model)
    want = _torch_gd_step(model, x, y[:, None], 0.5, torch.nn.BCEWithLogitsLoss())
    history = train(strategy, transport, initial, RunSettings("r", SEED, rounds=1))
    for name in initial:
        np.testing.assert_allclose(history.params[name], want[name], rtol=1e-5, atol=1e-6)
