"""Your own scikit-learn estimator: [model] framework = "sklearn" with factory = "mod:fn"."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from sklearn.linear_model import SGDClassifier

from fedsilo.client.factory import make_trainer
from fedsilo.client.policy import SitePolicy
from fedsilo.client.sklearn_trainer import SklearnTrainer
from fedsilo.client.user_model import architecture_of
from fedsilo.config.build import model_spec
from fedsilo.core.trainer import TrainConfig
from fedsilo.data.local_data import LocalData
from fedsilo.errors import ConfigError
from fedsilo.simulation.run import run_simulation
from tests.client.test_model_factory import FILES, fit_task, heart, institution, session

SGD = "tests.helpers_models:sgd_classifier"


def sklearn(factory: str = SGD, **args: Any) -> dict[str, Any]:
    return {"framework": "sklearn", "factory": factory, "args": args}


def binary_data(rows: int = 80) -> LocalData:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(rows, 3)).astype(np.float32)
    y = (x @ [1.0, -2.0, 0.5] > 0).astype(np.float32)
    return LocalData(x, y, x, y, "binary", 2)


def test_factory_sgd_classifier_run_is_bit_identical_to_the_built_in():
    builtin = run_simulation(heart({"framework": "sklearn", "kind": "logistic_regression"}),
                             write=False)
    own = run_simulation(heart(sklearn()), write=False)
    a, b = builtin.history.params, own.history.params
    assert list(a) == list(b) == ["coef", "intercept"]
    assert all(np.array_equal(a[k], b[k]) and a[k].dtype == b[k].dtype for k in a)
    assert not np.array_equal(a["coef"], np.zeros_like(a["coef"]))  # it trained


def test_factory_estimator_matches_the_same_estimator_built_in_python():
    """Shuffling inside partial_fit draws from random_state: the factory's estimator gets
    the run's model seed, as the same estimator built in Python with that seed."""
    spec = model_spec(heart(sklearn(shuffle=True)))
    data, cfg = binary_data(), TrainConfig(epochs=2, batch_size=8, lr=0.05)
    by_path = make_trainer(spec, data)
    by_hand = SklearnTrainer(data, estimator=SGDClassifier(
        loss="log_loss", learning_rate="constant", eta0=0.01, alpha=1e-4, shuffle=True,
        random_state=spec["seed"] % 2**32))
    assert by_path.estimator.random_state == spec["seed"] % 2**32
    one = by_path.fit(by_path.initial_params(), cfg, np.random.default_rng(0))[0]
    two = by_hand.fit(by_hand.initial_params(), cfg, np.random.default_rng(0))[0]
    assert all(np.array_equal(one[k], two[k]) for k in one)
    assert one["coef"].shape == (1, 3) and one["intercept"].shape == (1,)


def test_another_linear_estimator_trains():
    trainer = make_trainer(model_spec(heart(sklearn("tests.helpers_models:perceptron"))),
                           binary_data())
    params, n, _ = trainer.fit(trainer.initial_params(), TrainConfig(epochs=1, batch_size=8),
                               np.random.default_rng(0))
    assert n == 80 and np.any(params["coef"] != 0)
    assert trainer.evaluate(params)[1]["accuracy"] > 0.8


@pytest.mark.parametrize(("factory", "message"), [
    ("tests.helpers_models:not_a_module",
     "must return a scikit-learn estimator with partial_fit .*it returned dict"),
    ("tests.helpers_models:no_partial_fit",
     "must return a scikit-learn estimator with partial_fit .*it returned LogisticRegression"),
    ("tests.helpers_models:mlp_classifier", "MLPClassifier has no coef_ and intercept_"),
    ("tests.helpers_models:sgd_regressor",
     "binary task needs a scikit-learn classifier .*returned SGDRegressor"),
    ("tests.helpers_models:leaky", "failed with ValueError"),
])
def test_an_unfit_estimator_is_refused_with_the_reason(factory, message):
    with pytest.raises(ConfigError, match=message) as e:
        make_trainer(model_spec(heart(sklearn(factory))), binary_data())
    assert "patient 4711" not in str(e.value)


def test_a_loss_with_a_sklearn_model_is_refused():
    raw = heart(sklearn())
    cfg = raw.model_copy(update={"client": raw.client.model_copy(
        update={"loss": "tests.helpers_models:bce_by_hand"})})
    with pytest.raises(ConfigError, match="client.loss applies to PyTorch models"):
        model_spec(cfg)


def test_the_architecture_check_applies():
    spec = {**model_spec(heart(sklearn())),
            "architecture": architecture_of([("coef", (1, 99)), ("intercept", (1,))])}
    with pytest.raises(ConfigError, match=r"parameter 'coef' has shape \(1, 3\) here, "
                                          r"\(1, 99\) at the server"):
        make_trainer(spec, binary_data())


def test_an_institution_refuses_a_factory_its_policy_does_not_allow():
    cfg = heart(sklearn(), rounds=1)
    site = SitePolicy(secure="none")
    refused = session(cfg, {n: institution(n, site) for n in FILES})
    reasons = [r for e in refused.history.events for r in e.rejected.values()]
    assert reasons and all(f"allows model factories [], task asks for '{SGD}'" in r
                           for r in reasons), reasons
    allowed = SitePolicy(secure="none", factories=[SGD])
    result = session(cfg, {n: institution(n, allowed) for n in FILES})
    assert all(not e.rejected and len(e.participants) == 4 for e in result.history.events)
    arch = result.setup["model"]["architecture"]
    assert [p[0] for p in arch["parameters"]] == ["coef", "intercept"]
    reply = institution("cleveland", site).handle(fit_task(result.setup))
    assert reply.error is not None and reply.error.code == "policy_refused"
