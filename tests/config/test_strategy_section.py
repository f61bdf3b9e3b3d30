"""The [strategy] section: flat for users, validated against the typed hyper-parameters of
the named strategy (algorithms/registry.py), read back flat, and built with them."""

import pytest

from fedsilo.algorithms.registry import STRATEGY_NAMES, STRATEGY_REGISTRY, registered
from fedsilo.cli.main import main
from fedsilo.config.build import build_strategy
from fedsilo.config.schema import (
    ASYNC_STRATEGIES,
    STRATEGIES,
    STRATEGY_KEYS,
    StrategySection,
    load_config,
    parse_config,
)
from fedsilo.errors import ConfigError
from fedsilo.optim import adagrad, adam, sgd, yogi
from tests.conftest import EXAMPLES

HEART = EXAMPLES / "heart_disease"
# the flat section of earlier versions, as its dump listed it (every key, defaults unset)
FORMER_DUMP = {"fraction": 1.0, "min_clients": 1, "weighted": True, "server_lr": None,
               "momentum": 0.9, "beta1": None, "beta2": None, "eps": 1e-8, "tau": 1e-3,
               "mu": 0.01, "stragglers": 0.0, "straggler_policy": "partial", "buffer_size": 10,
               "mixing": 0.6, "staleness": "polynomial", "staleness_a": 0.5,
               "staleness_b": 4.0, "max_staleness": None}


def heart(strategy):
    cfg = load_config(HEART / "heart_disease.toml")
    raw = cfg.model_dump(exclude={"base_dir"})
    raw["strategy"] = strategy
    if strategy.get("name") in ASYNC_STRATEGIES:
        raw["run"]["mode"] = "async"
    return parse_config(raw, cfg.base_dir)


def test_the_golden_strategies_come_first_in_the_registry_and_feddyn_after():
    assert STRATEGY_NAMES[:len(STRATEGIES)] == STRATEGIES
    assert STRATEGY_NAMES[len(STRATEGIES):] == ("feddyn",)
    assert all(registered(n).build is None for n in ASYNC_STRATEGIES)
    assert STRATEGY_KEYS["alpha"] == ("feddyn",) and STRATEGY_KEYS["mu"] == ("fedprox",)
    assert STRATEGY_KEYS["buffer_size"] == ("fedbuff",)


@pytest.mark.parametrize("name", STRATEGY_NAMES)
def test_a_dumped_section_is_flat_and_parses_back_to_itself(name):
    cfg = heart({"name": name})
    dumped = cfg.model_dump(mode="json", exclude={"base_dir"})
    takes = set(STRATEGY_REGISTRY[name].params.model_fields)
    common = {"name", "fraction", "min_clients", "weighted", "stragglers", "straggler_policy"}
    assert set(dumped["strategy"]) == common | takes  # flat, only what it takes
    assert parse_config(dumped, cfg.base_dir) == cfg


@pytest.mark.parametrize("name", STRATEGIES)
def test_a_section_dumped_by_the_former_flat_schema_still_parses(name):
    cfg = heart({**FORMER_DUMP, "name": name})
    assert cfg.strategy == heart({"name": name, "weighted": True}).strategy


@pytest.mark.parametrize("strategy,key,takes", [
    ({"name": "fedprox", "tau": 0.1}, "tau", "fedprox takes mu and the common keys"),
    ({"name": "fedavg", "mu": 0.1}, "mu", "fedavg takes only the common keys"),
    ({"name": "fedadam", "momentum": 0.5}, "momentum",
     "fedadam takes server_lr, beta1, beta2, eps and"),
    ({"name": "fedbuff", "mixing": 0.5}, "mixing", "fedbuff takes server_lr, staleness"),
    ({"name": "fedavg", "server_lr": 0.5}, "server_lr", "fedavg takes only"),
    ({"name": "fednova", "typo": 1}, "typo", "fednova takes server_lr and"),
])
def test_a_key_the_strategy_does_not_take_is_refused_with_what_it_takes(strategy, key, takes):
    with pytest.raises(ConfigError) as e:
        heart(strategy)
    msg = str(e.value)
    assert f"strategy '{strategy['name']}' does not take '{key}'" in msg
    assert takes in msg and "fraction, min_clients, weighted, stragglers" in msg


def test_the_refusal_exits_2_from_the_cli(tmp_path, capsys):
    text = (HEART / "heart_disease.toml").read_text().replace('"data/', f'"{HEART}/data/')
    assert 'name = "fedavg"' in text
    path = tmp_path / "run.toml"
    path.write_text(text.replace('name = "fedavg"', 'name = "feddyn"\nalpha = 0.1\nmu = 0.2'))
    code = main(["run", str(path), "--quiet"])
    captured = capsys.readouterr()
    out = " ".join((captured.out + captured.err).split())
    assert code == 2 and "strategy 'feddyn' does not take 'mu' (fedprox does)" in out
    assert "feddyn takes alpha and the common keys" in out


@pytest.mark.parametrize("strategy,where", [({"name": "fedprox", "mu": -1}, "strategy.mu"),
                                            ({"name": "fedyogi", "beta2": 1.5},
                                             "strategy.beta2"),
                                            ({"name": "fedbuff", "buffer_size": 0},
                                             "strategy.buffer_size"),
                                            ({"name": "fedmagic"}, "strategy.name")])
def test_a_bad_value_is_named_by_its_flat_key(strategy, where):
    with pytest.raises(ConfigError, match=rf"  - {where}: "):
        heart(strategy)


def test_hyper_parameters_read_as_attributes_of_the_section():
    s = heart({"name": "fedbuff", "buffer_size": 3, "server_lr": 0.5}).strategy
    assert (s.buffer_size, s.server_lr, s.staleness, s.max_staleness) == (3, 0.5,
                                                                          "polynomial", None)
    a = heart({"name": "fedasync", "mixing": 0.3}).strategy
    assert (a.mixing, a.buffer_size) == (0.3, 10)  # a key it does not take: its former default
    with pytest.raises(AttributeError):
        _ = a.no_such_key


def test_uniform_strategies_default_to_unweighted_means():
    assert heart({"name": "feddyn"}).strategy.weighted is False
    assert heart({"name": "feddyn", "weighted": True}).strategy.weighted is True
    assert heart({"name": "fedavg"}).strategy.weighted is True


def test_programmatic_hyper_of_another_strategy_is_refused():
    from fedsilo.algorithms.fedavg import FedProxParams

    with pytest.raises(ValueError, match="FedDynParams, not FedProxParams"):
        StrategySection(name="feddyn", hyper=FedProxParams())


@pytest.mark.parametrize("strategy,optimizer", [
    ({"name": "fedavg"}, sgd(1.0)),
    ({"name": "fedsgd"}, sgd(0.01)),  # the example's client lr
    ({"name": "fedsgd", "server_lr": 0.5}, sgd(0.5)),
    ({"name": "fedadam"}, adam(0.01, 0.9, 0.999, 1e-8)),
    ({"name": "fedyogi", "beta1": 0.5}, yogi(0.01, 0.5, 0.99, 1e-3)),
    ({"name": "fedadagrad", "tau": 0.01}, adagrad(0.1, 0.0, 0.01)),
    ({"name": "fedavgm", "momentum": 0.5}, sgd(1.0, 0.5)),
    ({"name": "scaffold", "server_lr": 0.7}, sgd(0.7)),
    ({"name": "fednova"}, sgd(1.0)),
    ({"name": "feddyn", "alpha": 0.2}, sgd(1.0)),
])
def test_the_built_strategy_has_the_typed_hyper_parameters(strategy, optimizer):
    built = build_strategy(heart(strategy))
    assert built.name == strategy["name"] and built.optimizer == optimizer
    if strategy["name"] == "feddyn":
        assert built.work.alpha == 0.2 and built.client_config["feddyn_alpha"] == 0.2


def test_a_section_renamed_by_copy_builds_with_the_new_strategys_keys_only():
    """The references of an async run copy the section under name 'fedavg'."""
    cfg = heart({"name": "fedbuff", "buffer_size": 3, "server_lr": 0.5})
    copy = cfg.model_copy(update={"run": cfg.run.model_copy(update={"mode": "sync"}),
                                  "strategy": cfg.strategy.model_copy(update={"name": "fedavg"})})
    assert build_strategy(copy).optimizer == sgd(1.0)
