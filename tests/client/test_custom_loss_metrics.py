"""Your own loss ([client] loss = "mod:fn") and metrics ([evaluation] metrics = ["mod:fn"])."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from sklearn.metrics import balanced_accuracy_score

from fedsilo.client.factory import make_trainer
from fedsilo.client.policy import METRICS, SitePolicy
from fedsilo.client.torch_trainer import TorchTrainer
from fedsilo.config.build import build_strategy, model_spec
from fedsilo.config.schema import RunConfig, parse_config
from fedsilo.core.trainer import TrainConfig
from fedsilo.data.local_data import LocalData
from fedsilo.data.prepare import local_data
from fedsilo.data.preprocessing import Preprocessor
from fedsilo.errors import ConfigError
from fedsilo.simulation.run import run_simulation
from tests.client.test_model_factory import FILES, HEART, heart, institution, session
from tests.helpers_models import bce_by_hand

LR = {"kind": "logistic_regression"}
BCE = "tests.helpers_models:bce_by_hand"
TWICE = "tests.helpers_models:bce_twice"
BALANCED = "tests.helpers_models:balanced_accuracy"


def with_(cfg: RunConfig, loss: str | None = None, metrics: list[str] | None = None,
          lr: float | None = None) -> RunConfig:
    client: dict[str, Any] = {"loss": loss} if loss else {}
    if lr is not None:
        client["lr"] = lr
    update: dict[str, Any] = {"client": cfg.client.model_copy(update=client)}
    if metrics is not None:
        update["evaluation"] = cfg.evaluation.model_copy(update={"metrics": metrics})
    return cfg.model_copy(update=update)


def binary_data() -> LocalData:
    rng = np.random.default_rng(5)
    x = rng.normal(size=(64, 3)).astype(np.float32)
    y = (x.sum(1) > 0).astype(np.float32)
    return LocalData(x, y, x, y, "binary", 2)


# loss -------------------------------------------------------------------------------------
def test_the_loss_travels_in_the_model_spec_not_in_the_training_settings():
    cfg = with_(heart(LR), loss=BCE)
    assert model_spec(cfg)["loss"] == BCE
    assert "loss" not in model_spec(heart(LR))  # runs without one: setups unchanged
    assert "loss" not in build_strategy(cfg).client_config


def test_a_loss_equal_to_the_built_in_gives_the_same_parameters_another_does_not():
    default = run_simulation(heart(LR), write=False).history.params
    by_hand = run_simulation(with_(heart(LR), loss=BCE), write=False).history.params
    twice = run_simulation(with_(heart(LR), loss=TWICE), write=False).history.params
    double_lr = run_simulation(with_(heart(LR), lr=0.02), write=False).history.params
    for k in default:
        np.testing.assert_allclose(by_hand[k], default[k], rtol=1e-5, atol=1e-6)
        assert not np.allclose(twice[k], default[k], rtol=1e-3)
        np.testing.assert_allclose(twice[k], double_lr[k], rtol=1e-4, atol=1e-6)  # plain SGD


@pytest.mark.parametrize(("loss", "message"), [
    ("tests.helpers_models:per_row_loss", "must return a scalar tensor, it returned Tensor "
                                          r"of shape \(8,\)"),
    ("tests.helpers_models:leaky_loss", "failed with ValueError"),
    ("tests.helpers_models:no_such_loss", "client.loss 'tests.helpers_models:no_such_loss': "
                                          "module 'tests.helpers_models' has no"),
])
def test_a_broken_loss_is_a_config_error_naming_it(loss, message):
    spec = {**model_spec(heart(LR)), "loss": loss}
    with pytest.raises(ConfigError, match=message) as e:
        trainer = make_trainer(spec, binary_data())
        trainer.fit(trainer.initial_params(), TrainConfig(batch_size=8),
                    np.random.default_rng(0))
    assert loss in str(e.value) and "patient 4711" not in str(e.value)


def test_a_loss_the_policy_does_not_allow_is_refused():
    cfg = with_(heart(LR, rounds=1), loss=BCE)
    refused = session(cfg, {n: institution(n, SitePolicy(secure="none")) for n in FILES})
    reasons = [r for e in refused.history.events for r in e.rejected.values()]
    assert reasons and all(f"task asks for client.loss '{BCE}'" in r
                           and "'factories'" in r for r in reasons), reasons
    allowed = SitePolicy(secure="none", factories=[BCE])
    result = session(cfg, {n: institution(n, allowed) for n in FILES})
    assert all(not e.rejected and len(e.participants) == 4 for e in result.history.events)


# metrics ----------------------------------------------------------------------------------
def test_a_custom_metric_is_federated_and_equals_computing_it_directly():
    cfg = with_(heart(LR, rounds=1), metrics=[BALANCED])
    institutions = {n: institution(n) for n in FILES}
    result = session(cfg, institutions)
    event = result.history.events[-1]
    pre = Preprocessor.from_dict(result.setup["preprocessor"])
    direct, sizes = {}, {}
    for name, inst in institutions.items():
        data = local_data(inst.split(result.setup["data"]), pre)
        trainer = make_trainer(model_spec(heart(LR)), data)
        pred = trainer.predict(result.history.params, data.x_test)
        direct[name] = balanced_accuracy_score(data.y_test.astype(int), pred >= 0.5)
        sizes[name] = len(data.y_test)
        assert event.evaluation[name]["balanced_accuracy"] == pytest.approx(direct[name],
                                                                            abs=1e-12)
    pooled = sum(direct[n] * sizes[n] for n in FILES) / sum(sizes.values())
    assert event.federated["balanced_accuracy"] == pytest.approx(pooled, abs=1e-12)
    assert "accuracy" in event.federated  # the built-in ones too


def test_a_custom_metric_leaves_only_if_the_policy_lists_its_name():
    cfg = with_(heart(LR, rounds=1), metrics=[BALANCED])
    site = SitePolicy(secure="none", factories=[BALANCED])
    result = session(cfg, {n: institution(n, site) for n in FILES})
    assert "balanced_accuracy" not in result.history.events[-1].federated
    assert "accuracy" in result.history.events[-1].federated
    site = SitePolicy(secure="none", factories=[BALANCED],
                      metrics=[*METRICS, "balanced_accuracy"])
    result = session(cfg, {n: institution(n, site) for n in FILES})
    assert "balanced_accuracy" in result.history.events[-1].federated
    with pytest.raises(Exception, match=f"task asks for evaluation.metrics '{BALANCED}'"):
        SitePolicy(secure="none").check_evaluate(result.setup, 1)


def test_a_metric_returning_no_number_is_refused_naming_it():
    spec = {**model_spec(heart(LR)), "metrics": ["tests.helpers_models:not_a_number"]}
    trainer = make_trainer(spec, binary_data())
    with pytest.raises(ConfigError, match="metric 'not_a_number' .*must return a number, it "
                                          "returned list"):
        trainer.evaluate(trainer.initial_params())


def test_custom_metrics_work_with_a_sklearn_model_and_multiclass_probabilities():
    spec = {**model_spec(heart({"framework": "sklearn", "kind": "logistic_regression"})),
            "metrics": [BALANCED]}
    rng = np.random.default_rng(2)
    x = rng.normal(size=(90, 2)).astype(np.float32)
    y = np.digitize(x[:, 0], [-0.5, 0.5]).astype(np.float32)
    trainer = make_trainer(spec, LocalData(x, y, x, y, "multiclass", 3))
    params, _, _ = trainer.fit(trainer.initial_params(), TrainConfig(epochs=3, batch_size=8),
                               np.random.default_rng(0))
    _, metrics = trainer.evaluate(params)
    pred = trainer.predict(params, x).argmax(axis=1)
    assert metrics["balanced_accuracy"] == balanced_accuracy_score(y.astype(int), pred)


@pytest.mark.parametrize(("metrics", "message"), [
    (["tests.helpers_models:accuracy"], "would be reported as 'accuracy', a built-in metric"),
    ([BALANCED, "other.mod:balanced_accuracy"], "another metric's name"),
    (["not a path"], "module.path:callable"),
])
def test_bad_metric_lists_are_refused_at_config_load(metrics, message):
    raw = heart(LR).model_dump()
    raw.pop("base_dir")
    raw["evaluation"] = {"metrics": metrics}
    with pytest.raises(ConfigError, match=message):
        parse_config(raw, HEART)


def test_torch_loss_accepts_a_plain_function():
    data = binary_data()
    model = torch.nn.Linear(3, 1)
    trainer = TorchTrainer(model, data, loss=bce_by_hand)
    _, _, metrics = trainer.fit(trainer.initial_params(), TrainConfig(batch_size=8),
                                np.random.default_rng(0))
    assert metrics["train_loss"] > 0
