"""Bring your own model: [model] factory = "module.path:callable" with [model.args]."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

import tests.helpers_models as helpers
from fedsilo.client.institution import Institution
from fedsilo.client.policy import SitePolicy
from fedsilo.client.user_model import build_user_model, import_factory
from fedsilo.config.build import build_schema, model_spec
from fedsilo.config.schema import RunConfig, load_config, parse_config
from fedsilo.core.messages import Task, TaskKind
from fedsilo.data.loading import read_table
from fedsilo.errors import ConfigError
from fedsilo.session import run_session
from fedsilo.simulation.run import run_simulation
from fedsilo.transport.inprocess import InProcessTransport
from tests.conftest import EXAMPLES

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

HEART = EXAMPLES / "heart_disease"
FILES = {"cleveland": "cleveland", "hungary": "hungarian", "switzerland": "switzerland",
         "va-long-beach": "va"}
FACTORY = "tests.helpers_models:mlp"


def heart(model: dict[str, Any], rounds: int = 2) -> RunConfig:
    raw = tomllib.loads((HEART / "heart_disease.toml").read_text())
    raw["run"].update(rounds=rounds, compare=False)
    raw["model"] = model
    return parse_config(raw, HEART)


def institution(name: str, policy: SitePolicy | None = None) -> Institution:
    path = HEART / "data" / f"processed.{FILES[name]}.data"
    return Institution(name, lambda read: read_table(path, read.get("columns"),
                                                     read.get("na_values")), policy=policy)


def session(cfg: RunConfig, institutions: dict[str, Institution]):  # type: ignore[no-untyped-def]
    schema = build_schema(cfg, pd.DataFrame(columns=cfg.data.columns))
    return run_session(cfg, InProcessTransport(institutions), schema, "byom",
                       read={"columns": cfg.data.columns, "na_values": cfg.data.na_values})


def fit_task(setup: dict[str, Any], name: str = "cleveland") -> Task:
    return Task("byom", 1, 0, TaskKind.FIT, name, {}, config={"epochs": 1}, setup=setup)


# (a) the same architecture as the built-in mlp: bit-identical run -----------------------
def test_factory_mlp_run_is_bit_identical_to_the_built_in_mlp():
    builtin = run_simulation(heart({"kind": "mlp", "hidden": [32]}), write=False)
    own = run_simulation(heart({"factory": FACTORY, "args": {"hidden": [32]}}), write=False)
    a, b = builtin.history.params, own.history.params
    assert list(a) == list(b)
    assert all(np.array_equal(a[k], b[k]) and a[k].dtype == b[k].dtype for k in a)
    assert len(own.history.events) == 2


def test_model_spec_carries_factory_args_and_the_model_seed():
    cfg = heart({"factory": FACTORY, "args": {"hidden": [8], "flag": True}})
    spec = model_spec(cfg)
    assert spec["factory"] == FACTORY and spec["args"] == {"hidden": [8], "flag": True}
    assert spec["seed"] == model_spec(heart({"kind": "mlp"}))["seed"]
    assert "kind" not in spec


def test_factory_is_called_under_the_seed_and_leaves_the_global_generator_alone():
    import torch

    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    one = build_user_model(FACTORY, {"hidden": [4]}, 5, 1, seed=7)
    two = build_user_model(FACTORY, {"hidden": [4]}, 5, 1, seed=7)
    assert torch.equal(torch.random.get_rng_state(), before)
    assert all(torch.equal(p, q) for p, q in zip(one.state_dict().values(),
                                                 two.state_dict().values()))


@pytest.mark.parametrize(("factory", "message"), [
    ("tests.no_such_module:build", "cannot import module 'tests.no_such_module'"),
    ("tests.helpers_models:missing", "has no 'missing'"),
    ("tests.helpers_models:NOT_CALLABLE", "is not callable"),
    ("tests.helpers_models:not_a_module", "must return a torch.nn.Module, it returned dict"),
])
def test_a_broken_factory_is_a_config_error_naming_it(factory, message):
    with pytest.raises(ConfigError, match=message) as e:
        build_user_model(factory, {}, 3, 1, seed=0)
    assert factory in str(e.value)


def test_import_factory_returns_the_callable():
    assert import_factory(FACTORY) is helpers.mlp


# (b) the site policy decides which factories may run -------------------------------------
def test_site_policy_refuses_a_factory_it_does_not_list():
    setup = {"strategy": "fedavg", "model": {"factory": FACTORY, "seed": 0}}
    with pytest.raises(Exception, match=r"allows model factories \[\], task asks for "
                       r"'tests.helpers_models:mlp' \(to allow it, add it to 'factories'"):
        SitePolicy().check_evaluate(setup, 1)
    SitePolicy(factories=[FACTORY]).check_evaluate(setup, 1)  # listed: allowed
    with pytest.raises(Exception, match="allows models"):  # built-in kinds: today's rule
        SitePolicy(models=["mlp"]).check_evaluate(
            {"strategy": "fedavg", "model": {"kind": "logistic_regression"}}, 1)


def test_policy_file_writes_and_reads_factories(tmp_path: Path):
    text = SitePolicy().to_toml()
    assert "factories = []" in text
    path = tmp_path / "policy.toml"
    path.write_text(SitePolicy(factories=[FACTORY]).to_toml())
    assert SitePolicy.load(path).factories == [FACTORY]


def test_an_institution_refuses_a_fit_task_naming_the_factory_and_the_key():
    site = SitePolicy(secure="none")
    setup = {"strategy": "fedavg", "model": {"factory": FACTORY, "seed": 0},
             "aggregator": {}}
    reply = institution("cleveland", site).handle(fit_task(setup))
    assert reply.error is not None and reply.error.code == "policy_refused"
    assert FACTORY in reply.error.reason and "'factories'" in reply.error.reason


def test_a_run_with_a_factory_the_policy_does_not_allow_is_refused_everywhere():
    cfg = heart({"factory": FACTORY}, rounds=1)
    site = SitePolicy(secure="none")
    result = session(cfg, {n: institution(n, site) for n in FILES})
    reasons = [r for e in result.history.events for r in e.rejected.values()]
    assert reasons and all("allows model factories []" in r for r in reasons), reasons
    allowed = SitePolicy(secure="none", factories=[FACTORY])
    result = session(cfg, {n: institution(n, allowed) for n in FILES})
    assert all(not e.rejected and len(e.participants) == 4 for e in result.history.events)


# (c) an institution that builds another architecture refuses, naming the parameter -------
def test_an_institution_building_another_architecture_refuses(monkeypatch):
    cfg = heart({"factory": FACTORY, "args": {"hidden": [32]}}, rounds=1)
    result = session(cfg, {n: institution(n) for n in FILES})
    setup = result.setup
    arch = setup["model"]["architecture"]
    assert arch["parameters"][0][0] == "0.weight" and len(arch["sha256"]) == 64
    features = arch["parameters"][0][1][1]
    monkeypatch.setattr(helpers, "mlp", helpers.wider)  # this institution's code differs
    reply = institution("cleveland").handle(fit_task(setup))
    assert reply.error is not None and reply.error.code == "config_error"
    assert reply.error.reason == (
        f"model from {FACTORY} differs from the server's: parameter '0.weight' has shape "
        f"(64, {features}) here, (32, {features}) at the server")


# (d) a malformed factory is refused when the config loads --------------------------------
@pytest.mark.parametrize("factory", ["build", "my.mod:", ":build", "my mod:build",
                                     "my.mod:build()", "os:system; rm"])
def test_a_bad_factory_string_is_refused_at_config_load(tmp_path: Path, factory):
    text = (HEART / "heart_disease.toml").read_text().replace(
        'kind = "logistic_regression"', f'factory = "{factory}"')
    path = tmp_path / "run.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=r"model\.factory.*module\.path:callable"):
        load_config(path)


@pytest.mark.parametrize(("model", "message"), [
    ({"kind": "mlp", "factory": FACTORY}, "set kind or factory, not both"),
    ({}, "set kind"),
    ({"factory": FACTORY, "hidden": [8]}, "hidden applies to kind 'mlp' only"),
    ({"factory": FACTORY, "args": {"num_features": 3}}, "set by fedsilo"),
    ({"kind": "mlp", "args": {"hidden": [3]}}, "args are passed to a factory only"),
])
def test_inconsistent_model_sections_are_refused(model, message):
    with pytest.raises(ConfigError, match=message):
        heart(model)


def test_cli_exits_2_on_a_bad_factory(tmp_path: Path):
    from fedsilo.cli.main import main

    text = (HEART / "heart_disease.toml").read_text().replace(
        'kind = "logistic_regression"', 'factory = "not a path"')
    path = tmp_path / "run.toml"
    path.write_text(text)
    assert main(["run", str(path)]) == 2


def test_a_failing_factory_sends_only_the_error_type_never_its_text():
    """The text of an exception raised in the institution's own code may quote its data:
    only the type leaves, the text stays in the institution's log."""
    from fedsilo.client.user_model import build_user_model

    with pytest.raises(ConfigError) as refused:
        build_user_model("tests.helpers_models:leaky", {}, 3, 1, 0)
    assert "ValueError" in refused.value.args[0] and "patient 4711" not in str(refused.value)
