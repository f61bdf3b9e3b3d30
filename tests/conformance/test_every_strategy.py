"""Every strategy and every robust rule, selected by name in a run config, trains the heart
disease example through the same round loop; bad hyper-parameters are refused by name."""

import pytest

from fedsilo.config.schema import ASYNC_STRATEGIES, STRATEGIES, load_config, parse_config
from fedsilo.errors import ConfigError
from fedsilo.simulation.run import run_simulation
from tests.conftest import EXAMPLES

HEART = EXAMPLES / "heart_disease" / "heart_disease.toml"


def heart(strategy=None, **sections):
    cfg = load_config(HEART)
    raw = cfg.model_dump(exclude={"base_dir"})
    raw["run"].update(rounds=5, compare=False)
    if strategy and strategy["name"] in ASYNC_STRATEGIES:  # as many updates, one at a time
        raw["run"].update(mode="async", rounds=20, evaluate_every=20)
    raw["client"].update(steps=50)
    raw["strategy"] = strategy or {"name": "fedavg"}
    for name, values in sections.items():
        raw[name] = {**raw.get(name, {}), **values}
    return parse_config(raw, cfg.base_dir)


@pytest.mark.parametrize("name", STRATEGIES)
def test_every_strategy_learns_heart_disease_from_its_name(name):
    strategy = {"name": name}
    if name == "fedsgd":
        strategy["server_lr"] = 0.5
    if name in ("fedadam", "fedyogi"):
        strategy["server_lr"] = 0.05
    if name == "fedadagrad":
        strategy["server_lr"] = 0.3
    if name == "fedbuff":
        strategy["buffer_size"] = 1
    result = run_simulation(heart(strategy), write=False)
    contributions = sum(len(ev.participants) for ev in result.history.events)
    assert contributions == 20  # 5 rounds x 4, or 20 updates one by one
    assert result.final["accuracy"] > 0.68, (name, result.final)  # majority class: 0.55


@pytest.mark.parametrize("robust", ["median", "trimmed_mean", "krum", "multikrum"])
def test_every_robust_rule_learns_heart_disease_from_its_name(robust):
    aggregation = {"robust": robust, "byzantine": 0, "trim_fraction": 0.25}
    result = run_simulation(heart(aggregation=aggregation), write=False)
    assert result.final["accuracy"] > 0.68, (robust, result.final)
    assert result.history.events[-1].metrics["aggregator"]["received"] == 4


@pytest.mark.parametrize("strategy,key", [({"name": "fedavg", "mu": 0.1}, "mu"),
                                          ({"name": "fedprox", "tau": 0.1}, "tau"),
                                          ({"name": "fedadam", "momentum": 0.5}, "momentum")])
def test_a_hyper_parameter_the_strategy_does_not_use_is_refused(strategy, key):
    with pytest.raises(ConfigError, match=f"does not take '{key}'"):
        heart(strategy)


@pytest.mark.parametrize("strategy", [{"name": "fedprox", "mu": -1},
                                      {"name": "fedyogi", "beta2": 1.5},
                                      {"name": "fedavg", "stragglers": 2},
                                      {"name": "fedavg", "straggler_policy": "wait"},
                                      {"name": "fedmagic"}])
def test_out_of_range_values_and_unknown_names_are_refused(strategy):
    with pytest.raises(ConfigError, match="strategy"):
        heart(strategy)


def test_robust_aggregation_with_secure_aggregation_is_refused_in_config():
    with pytest.raises(ConfigError, match="'median'.*hides them"):
        heart(aggregation={"robust": "median", "secure": "secagg+", "threshold": 2})


def test_personalization_reports_personal_models_per_institution():
    result = run_simulation(heart(personalization={"finetune_epochs": 1, "ditto_lambda": 0.1}),
                            write=False)
    final = result.history.events[-1].evaluation
    for name, metrics in final.items():
        assert {"accuracy", "finetuned_accuracy", "ditto_accuracy"} <= set(metrics), name
    first = result.history.events[0].evaluation
    assert all("finetuned_accuracy" not in m for m in first.values())  # final round only


@pytest.mark.parametrize("name", ["fedavg", "fedprox", "fedbuff"])
def test_a_dumped_config_parses_back_to_itself(name):
    cfg = heart({"name": name})
    again = parse_config(cfg.model_dump(exclude={"base_dir"}), cfg.base_dir)
    assert again == cfg
