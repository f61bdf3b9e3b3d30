"""The institution decides, not the server: a curious or misconfigured server that asks for
less protection than an institution's site policy requires is refused before any training,
with a reason naming the rule, and the server records the refusal. Real kits (policy.toml
written by `fedsilo provision`), real TLS over loopback, real heart-disease data."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from fedsilo.client.institution import Institution
from fedsilo.client.policy import FILENAME, SitePolicy
from fedsilo.config.build import build_schema
from fedsilo.config.schema import load_config, parse_config
from fedsilo.data.loading import read_table
from fedsilo.errors import AggregationError, FedsiloError
from fedsilo.session import run_session
from fedsilo.transport.grpc.provision import Project, provision
from fedsilo.transport.inprocess import InProcessTransport
from tests.integration.conftest import start
from tests.integration.helpers import FILES, HEART, heart_config

pytestmark = pytest.mark.integration
NAMES = sorted(FILES)


def institution(name: str, policy: SitePolicy | None) -> Institution:
    path = HEART / "data" / f"processed.{FILES[name]}.data"
    return Institution(name, lambda read: read_table(path, read.get("columns"),
                                                     read.get("na_values")), policy=policy)


def session(tmp_path: Path, transport, rounds: int = 2, **sections):  # type: ignore[no-untyped-def]
    cfg = load_config(heart_config(tmp_path, rounds=rounds, compare=False))
    raw = cfg.model_dump(exclude={"base_dir"})
    for section, values in sections.items():
        raw[section] = {**raw.get(section, {}), **values}
    cfg = parse_config(raw, cfg.base_dir)
    schema = build_schema(cfg, pd.DataFrame(columns=cfg.data.columns))
    return run_session(cfg, transport, schema, "policy", timeout=600,
                       read={"columns": cfg.data.columns, "na_values": cfg.data.na_values})


def refusals(result) -> list[str]:  # type: ignore[no-untyped-def]
    return [r for e in result.history.events for r in e.rejected.values()]


def test_provisioned_kits_hold_a_safe_policy_the_institution_can_edit(tmp_path):
    root = tmp_path / "kits"
    provision(Project("heart", "localhost", tuple(NAMES)), root)
    policy = SitePolicy.load(root / "cleveland" / FILENAME)
    assert policy.secure == "secagg+" and policy.min_threshold >= 2
    assert not policy.deterministic_noise and policy.evaluation
    assert not (root / "server" / FILENAME).exists()  # the server has none to send
    edited = (root / "cleveland" / FILENAME).read_text().replace("min_threshold = 2",
                                                                   "min_threshold = 3")
    (root / "cleveland" / FILENAME).write_text(edited)
    assert SitePolicy.load(root / "cleveland" / FILENAME).min_threshold == 3


def test_plaintext_task_refused_over_grpc_and_recorded_by_the_server(tmp_path, transport,
                                                                      kits):
    """Attack: the server switches the run to plaintext. Every institution's kit policy (the
    default, secagg+) refuses its first task, the prepare stage's statistics in the clear,
    before reading its data; the server records the reasons and no round starts."""
    for n in NAMES:
        start(kits, transport, n, institution(n, SitePolicy.load(kits / n / FILENAME)).handle)
    assert len(transport.wait_for_clients(4, 600)) == 4
    with pytest.raises(AggregationError, match="0 institutions sent statistics") as e:
        session(tmp_path, transport)
    assert str(e.value).count("site policy requires secagg+, the preprocessing task asks for "
                              "its statistics in the clear") == 4


@pytest.mark.parametrize(("policy", "sections", "rule"), [
    ({"secure": "none"},
     {"privacy": {"mode": "central", "deterministic_noise": True}},
     "refuses deterministic_noise"),
    ({"secure": "none", "max_epsilon": 1.0},
     {"privacy": {"mode": "central", "noise_multiplier": 0.5}},
     "allows ε ≤ 1.0 per run"),
    ({"secure": "none", "max_epsilon": 1.0}, {}, "requires differential privacy"),
    ({"secure": "none", "min_noise_multiplier": 2.0},
     {"privacy": {"mode": "central", "noise_multiplier": 1.0}},
     "requires a noise multiplier of at least 2.0"),
    ({"secure": "none", "strategies": ["fedavg"]}, {"strategy": {"name": "fedadam"}},
     "allows strategies ['fedavg'], task asks for 'fedadam'"),
    ({"secure": "none", "models": ["logistic_regression"]}, {"model": {"kind": "mlp"}},
     "allows models ['logistic_regression'], task asks for 'mlp'"),
    ({"secure": "none", "max_rounds": 1}, {}, "allows at most 1 rounds, task is round 2"),
])
def test_weaker_tasks_are_refused_naming_the_rule(tmp_path, policy, sections, rule):
    site = SitePolicy.model_validate(policy)
    transport = InProcessTransport({n: institution(n, site) for n in NAMES})
    result = session(tmp_path, transport, **sections)
    reasons = refusals(result)
    assert reasons and all(rule in r for r in reasons), reasons


def test_a_clear_prepare_task_is_refused_by_a_policy_that_requires_secagg(tmp_path, caplog):
    """Attack: the server runs in the clear to learn each institution's statistics. An
    institution whose policy requires secagg+ refuses the prepare task before reading its
    data, naming the rule, and takes no part; the others (policy none) train."""
    read: list[str] = []
    path = HEART / "data" / f"processed.{FILES['cleveland']}.data"

    def table(options):  # type: ignore[no-untyped-def]
        read.append("cleveland")
        return read_table(path, options.get("columns"), options.get("na_values"))

    strict = Institution("cleveland", table, policy=SitePolicy.model_validate(
        {"secure": "secagg+", "evaluation": False}))
    open_ = SitePolicy.model_validate({"secure": "none"})
    transport = InProcessTransport({n: strict if n == "cleveland" else institution(n, open_)
                                    for n in NAMES})
    result = session(tmp_path, transport)
    refused = [r.message for r in caplog.records if "refused task" in r.message
               and "/prepare/" in r.message]
    assert len(refused) == 1 and "cleveland" in refused[0] and (
        "site policy requires secagg+, the preprocessing task asks for its statistics in the "
        "clear (none)" in refused[0]), refused
    assert read == []  # refused before any work on its data (fit and evaluate too)
    assert all(e.participants and "cleveland" not in e.participants
               for e in result.history.events)


def test_a_secure_prepare_task_below_the_policy_threshold_is_refused(tmp_path, caplog):
    site = SitePolicy.model_validate({"secure": "secagg+", "min_threshold": 3})
    transport = InProcessTransport({n: institution(n, site) for n in NAMES})
    with pytest.raises(FedsiloError):
        session(tmp_path, transport, aggregation={"secure": "secagg+", "threshold": 2})
    refused = [r.message for r in caplog.records if "refused task" in r.message]
    assert len(refused) == 4 and all(
        "requires a SecAgg+ threshold of at least 3, the preprocessing task asks for 2" in m
        for m in refused), refused


def test_a_policy_that_allows_the_task_lets_it_train(tmp_path):
    site = SitePolicy.model_validate({"secure": "secagg+", "min_threshold": 2})
    transport = InProcessTransport({n: institution(n, site) for n in NAMES})
    result = session(tmp_path, transport, rounds=3,
                     aggregation={"secure": "secagg+", "threshold": 2})
    assert not refusals(result)
    assert all(sorted(e.participants) == NAMES for e in result.history.events)
    assert result.history.events[-1].federated["accuracy"] > 0.6


def test_evaluation_refused_and_metrics_filtered_by_policy(tmp_path):
    closed = SitePolicy.model_validate({"secure": "none", "evaluation": False})
    counts_only = SitePolicy.model_validate({"secure": "none", "metrics": ["accuracy"]})
    transport = InProcessTransport({n: institution(n, closed if n == "cleveland"
                                                   else counts_only) for n in NAMES})
    result = session(tmp_path, transport)
    final = result.history.events[-1].evaluation
    assert "cleveland" not in final  # it refused to evaluate on its data
    assert final and all(set(m) == {"accuracy"} for m in final.values())  # log_loss stayed


@pytest.mark.parametrize(("policy", "rule"), [
    ({"secure": "none", "categorical": ["cp"]},
     "allows categorical columns ['cp'], task treats ['restecg'] as categorical"),
    ({"secure": "none", "max_levels": 3}, "at most 3 levels of a column leave; ['cp'] has more"),
])
def test_categorical_values_leave_only_as_the_policy_allows(tmp_path, caplog, policy, rule):
    """Attack: the server declares columns categorical to learn their values. The
    institution whose policy does not allow it shares no statistics and takes no part."""
    strict = SitePolicy.model_validate(policy)
    transport = InProcessTransport({n: institution(n, strict if n == "cleveland" else None)
                                    for n in NAMES})
    result = session(tmp_path, transport)
    refused = [r.message for r in caplog.records if "refused task" in r.message]
    assert refused and all(rule in m and "cleveland" in m for m in refused), refused
    assert all("cleveland" not in e.participants and e.participants
               for e in result.history.events)
