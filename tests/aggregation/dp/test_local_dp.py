"""Local, sample-level DP-SGD (Opacus) inside each institution, with its own budget."""

import numpy as np
import pytest

from fedsilo.client.models import build_model
from fedsilo.client.torch_trainer import TorchTrainer
from fedsilo.config.schema import load_config
from fedsilo.core.trainer import TrainConfig
from fedsilo.errors import PrivacyBudgetExhausted
from fedsilo.simulation.run import run_simulation
from tests.algorithms.test_fedavg_math import binary_data
from tests.conftest import EXAMPLES


def dp_config(rounds=2, epsilon=None):
    return TrainConfig(epochs=1, batch_size=16, lr=0.1, dp_local={
        "epsilon": epsilon or {"*": 2.0}, "delta": 1e-5, "max_grad_norm": 1.0,
        "rounds": rounds})


def test_budget_is_met_then_training_is_refused():
    data = binary_data(120, 1)
    trainer = TorchTrainer(build_model("logistic_regression", 6, 1, "binary"), data, name="a")
    params = trainer.initial_params()
    rng = np.random.default_rng(0)
    for _ in range(2):  # the two planned rounds
        params, _, metrics = trainer.fit(params, dp_config(), rng)
    assert 1.8 <= metrics["dp_epsilon"] <= 2.0  # calibrated to spend the budget, not more
    with pytest.raises(PrivacyBudgetExhausted, match="spent"):
        trainer.fit(params, dp_config(), rng)


def test_each_institution_has_its_own_budget():
    make = lambda name: TorchTrainer(  # noqa: E731
        build_model("logistic_regression", 6, 1, "binary"), binary_data(120, 2), name=name)
    strict, loose = make("cleveland"), make("hungary")
    budgets = {"cleveland": 0.5, "*": 8.0}
    _, _, m_strict = strict.fit(strict.initial_params(), dp_config(1, budgets),
                                np.random.default_rng(0))
    _, _, m_loose = loose.fit(loose.initial_params(), dp_config(1, budgets),
                              np.random.default_rng(0))
    assert m_strict["dp_epsilon"] <= 0.5 < m_loose["dp_epsilon"] <= 8.0
    assert m_strict["dp_noise_multiplier"] > m_loose["dp_noise_multiplier"]


def test_local_dp_run_on_heart_disease():
    cfg = load_config(EXAMPLES / "heart_disease" / "heart_disease_mlp.toml")
    cfg = cfg.model_copy(update={
        "run": cfg.run.model_copy(update={"compare": False, "rounds": 5}),
        "privacy": cfg.privacy.model_copy(update={"mode": "local", "local_epsilon": {"*": 3.0}})})
    result = run_simulation(cfg, write=False)
    last = result.history.events[-1]
    assert len(last.participants) == 4 and 2.5 <= last.metrics["client_work"]["dp_epsilon"] <= 3.0
    assert result.final["accuracy"] > 0.7
