"""How BatchNorm entries travel: `[model] batchnorm = "average" | "local"`.

- "average" (default): every state_dict entry, BN running statistics included, is averaged
  like any parameter: after one FedAvg round the server's running_mean is the example-weighted
  mean of the institutions' locally trained running_means.
- "local" (FedBN): every BN entry stays in the institution; the server's BN entries never
  move; each institution trains and evaluates with its own; the rest is federated as usual.
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from fedsilo.algorithms.fedavg import fedavg, local_training
from fedsilo.cli.main import main
from fedsilo.client.client import Client
from fedsilo.client.factory import make_trainer
from fedsilo.client.torch_trainer import TorchTrainer, batchnorm_names
from fedsilo.config.build import model_spec
from fedsilo.config.schema import RunConfig, parse_config
from fedsilo.core.params import Params
from fedsilo.core.trainer import TrainConfig
from fedsilo.data.local_data import LocalData
from fedsilo.engine.drivers import train
from fedsilo.engine.flow import RunSettings
from fedsilo.errors import ConfigError
from fedsilo.simulation.run import run_simulation
from fedsilo.transport.inprocess import InProcessTransport
from tests.conftest import EXAMPLES
from tests.helpers_models import bn_mlp

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

HEART = EXAMPLES / "heart_disease"
FACTORY = "tests.helpers_models:bn_mlp"
# full batch, so a local fit does not depend on the batch order (up to float rounding)
CFG = {"epochs": 2, "batch_size": 1000, "lr": 0.1}
BN = ("1.weight", "1.bias", "1.running_mean", "1.running_var", "1.num_batches_tracked")
# (examples, feature shift, feature scale): the institutions' features differ in distribution
SITES = ((40, 0.0, 1.0), (90, 3.0, 0.5), (25, -2.0, 2.0))


def site_data(n: int, shift: float, scale: float, seed: int) -> LocalData:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n + 10, 5)).astype(np.float32)
    y = (x[:, 0] + x[:, 1] > 0).astype(np.float32)
    x = (x * scale + shift).astype(np.float32)
    return LocalData(x[:n], y[:n], x[n:], y[n:], "binary", 1)


def datas() -> list[LocalData]:
    return [site_data(n, s, c, i) for i, (n, s, c) in enumerate(SITES)]


def model() -> torch.nn.Module:
    torch.manual_seed(0)
    return bn_mlp(5, 1)


def federation(rule: str) -> tuple[InProcessTransport, dict[str, Client], Params]:
    shared = model()  # shared by the institutions, as in simulation
    strategy = fedavg(CFG)
    clients = {f"c{i}": Client(f"c{i}", TorchTrainer(shared, d, batchnorm=rule),
                               strategy.aggregator) for i, d in enumerate(datas())}
    return InProcessTransport(clients), clients, clients["c0"].trainer.initial_params()


def run(rule: str, rounds: int) -> tuple[Params, dict[str, Client], Params]:
    transport, clients, initial = federation(rule)
    history = train(fedavg(CFG), transport, initial, RunSettings("bn", 3, rounds=rounds))
    return history.params, clients, initial


def trained_by_hand(data: LocalData, start: Params) -> Params:
    """One institution's local fit from `start`, on its own copy of the model."""
    trainer = TorchTrainer(copy.deepcopy(model()), data)
    new, _, _ = trainer.fit(start, TrainConfig.from_mapping(CFG), np.random.default_rng(0))
    return new


def weighted_mean(arrays: list[np.ndarray]) -> np.ndarray:
    w = np.array([n for n, _, _ in SITES], dtype=np.float64)
    return np.tensordot(w / w.sum(), np.stack(arrays).astype(np.float64), axes=1)


def test_batchnorm_names_are_every_entry_of_every_batchnorm_layer():
    assert batchnorm_names(bn_mlp(5, 1)) == BN
    assert batchnorm_names(torch.nn.BatchNorm1d(3)) == (
        "weight", "bias", "running_mean", "running_var", "num_batches_tracked")


# (a) "average": BN statistics are averaged like any parameter ------------------------------
def test_average_server_running_mean_is_the_weighted_mean_of_the_local_ones():
    server, _, initial = run("average", rounds=1)
    local = [trained_by_hand(d, initial) for d in datas()]
    assert not np.allclose(local[0]["1.running_mean"], local[1]["1.running_mean"])
    for name in ("1.running_mean", "1.running_var", "1.weight", "0.weight", "3.bias"):
        want = weighted_mean([p[name] for p in local])
        np.testing.assert_allclose(server[name], want, rtol=1e-5, atol=1e-6)


# (b) "local": FedBN -------------------------------------------------------------------------
def test_local_update_is_zero_for_every_batchnorm_entry_and_nonzero_elsewhere():
    _, clients, initial = federation("local")
    update, _, _ = local_training(clients["c1"].trainer, initial, dict(CFG),
                                  np.random.default_rng(0), {})
    for name in BN:
        assert not update[name].any(), name
        assert update[name].dtype == initial[name].dtype
    assert update["0.weight"].any() and update["3.weight"].any()


def test_local_server_bn_never_moves_institutions_keep_their_own_statistics():
    server, clients, initial = run("local", rounds=3)
    for name in BN:  # the server's BN entries are their initial values
        np.testing.assert_array_equal(server[name], initial[name])
    for name in ("0.weight", "0.bias", "3.weight", "3.bias"):  # the rest is federated
        assert not np.array_equal(server[name], initial[name]), name
    kept = [c.trainer.local_entries for c in clients.values()]  # type: ignore[attr-defined]
    for entries in kept:
        assert tuple(entries) == BN
        assert int(entries["1.num_batches_tracked"]) == 3 * CFG["epochs"]  # 3 rounds here
        assert not np.array_equal(entries["1.running_mean"], initial["1.running_mean"])
    for a, b in ((0, 1), (0, 2), (1, 2)):  # different features, different statistics
        assert not np.allclose(kept[a]["1.running_mean"], kept[b]["1.running_mean"])
        assert not np.allclose(kept[a]["1.running_var"], kept[b]["1.running_var"])


def test_local_first_round_trains_from_the_received_bn_and_keeps_the_result():
    server, clients, initial = run("local", rounds=1)
    local = [trained_by_hand(d, initial) for d in datas()]
    for client, by_hand in zip(clients.values(), local):
        for name in BN:
            np.testing.assert_allclose(client.trainer.local_entries[name],  # type: ignore
                                       by_hand[name], rtol=1e-5, atol=1e-6)
    for name in ("0.weight", "3.bias"):  # non-BN entries: FedAvg as usual
        want = weighted_mean([p[name] for p in local])
        np.testing.assert_allclose(server[name], want, rtol=1e-5, atol=1e-6)


def test_local_evaluation_of_the_global_model_uses_the_institutions_own_bn():
    server, clients, _ = run("local", rounds=2)
    for cid, data in zip(clients, datas()):
        trainer = clients[cid].trainer
        with_own_bn = {**server, **trainer.local_entries}  # type: ignore[attr-defined]
        plain = TorchTrainer(copy.deepcopy(model()), data)  # "average": uses what it gets
        assert trainer.evaluate(server) == plain.evaluate(with_own_bn)
        assert np.array_equal(trainer.predict(server, data.x_test),
                              plain.predict(with_own_bn, data.x_test))
    # before any fit, an institution has nothing of its own: it uses what it receives
    fresh = TorchTrainer(model(), datas()[0], batchnorm="local")
    plain = TorchTrainer(model(), datas()[0])
    assert fresh.evaluate(server) == plain.evaluate(server)


def test_local_gradient_is_zero_for_batchnorm_parameters():
    _, clients, initial = federation("local")
    grads, _, _ = clients["c0"].trainer.gradient(initial)
    for name in BN:
        assert not grads[name].any(), name
    assert grads["0.weight"].any()


# the config key, carried in the model spec -------------------------------------------------
def heart(model: dict[str, Any]) -> RunConfig:
    raw = tomllib.loads((HEART / "heart_disease.toml").read_text())
    raw["run"].update(rounds=2, compare=False)
    # full batches: a last batch of one row would stop BatchNorm in training mode (torch)
    raw.setdefault("client", {})["batch_size"] = 1000
    raw["model"] = model
    return parse_config(raw, HEART)


def test_model_spec_carries_the_rule_only_when_local():
    assert "batchnorm" not in model_spec(heart({"factory": FACTORY}))
    assert "batchnorm" not in model_spec(heart({"factory": FACTORY, "batchnorm": "average"}))
    assert model_spec(heart({"factory": FACTORY, "batchnorm": "local"}))["batchnorm"] == "local"
    assert heart({"kind": "mlp"}).model.batchnorm == "average"


def test_make_trainer_applies_the_rule_from_the_spec():
    spec = model_spec(heart({"factory": FACTORY, "batchnorm": "local"}))
    trainer = make_trainer(spec, datas()[0])
    assert isinstance(trainer, TorchTrainer) and trainer._local_names == BN
    trainer = make_trainer(model_spec(heart({"factory": FACTORY})), datas()[0])
    assert isinstance(trainer, TorchTrainer) and trainer._local_names == ()


@pytest.mark.parametrize("rule", ["average", "local"])
def test_simulation_with_a_batchnorm_model_runs_under_either_rule(rule):
    """End to end (heart disease, four hospitals): every reply accepted; under "local" the
    server's BN entries are their initial values, under "average" they move."""
    result = run_simulation(heart({"factory": FACTORY, "batchnorm": rule}), write=False)
    events = result.history.events
    assert len(events) == 2
    final = result.history.params
    initial = bn_mlp(final["0.weight"].shape[1], 1).state_dict()  # BN's initial values
    moved = [not np.array_equal(np.asarray(final[n]), initial[n].numpy()) for n in BN[:4]]
    assert moved == ([False] * 4 if rule == "local" else [True] * 4)
    assert all(len(e.participants) == 4 and not e.rejected for e in events)


# (c) refused at config load -------------------------------------------------------------------
@pytest.mark.parametrize("model,match", [
    ({"factory": FACTORY, "batchnorm": "fedbn"}, "batchnorm"),
    ({"factory": FACTORY, "batchnorm": 1}, "batchnorm"),
    ({"kind": "logistic_regression", "framework": "sklearn", "batchnorm": "local"},
     "framework must be 'torch'"),
])
def test_bad_batchnorm_setting_is_refused_at_config_load(model, match):
    with pytest.raises(ConfigError, match=match):
        heart(model)


def test_bad_batchnorm_value_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    text = (HEART / "heart_disease.toml").read_text()
    assert '[model]\nkind = "logistic_regression"\n' in text
    path = tmp_path / "bad.toml"
    path.write_text(text.replace('[model]\nkind = "logistic_regression"\n',
                                 '[model]\nkind = "logistic_regression"\nbatchnorm = "mean"\n'))
    assert main(["run", str(path), "--quiet"]) == 2
    assert "batchnorm" in capsys.readouterr().out


def test_trainer_refuses_an_unknown_rule():
    with pytest.raises(ConfigError, match="batchnorm"):
        TorchTrainer(model(), datas()[0], batchnorm="median")
