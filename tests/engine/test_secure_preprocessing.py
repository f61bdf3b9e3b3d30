"""Secure federated preprocessing (issue 12 §3): with secure aggregation on (SecAgg+, SecAgg,
CKKS), the prepare stage sends the server each institution's row counts and masked vectors
only, and fits the same preprocessing as the clear one; without declared levels a secure run
is refused before anything is sent; without secure aggregation nothing changes."""

from __future__ import annotations

import numpy as np
import pytest

import fedsilo.session as session_module
from fedsilo.config.schema import load_config, parse_config
from fedsilo.core.messages import Reply
from fedsilo.data.preprocessing import LocalStatistics, Preprocessor, merge_all
from fedsilo.data.schema import Schema
from fedsilo.engine.secure_prepare import FIXED, Layout, limbs, unlimb
from fedsilo.errors import ConfigError, DataError
from fedsilo.simulation.run import run_simulation
from fedsilo.transport.inprocess import InProcessTransport
from tests.conftest import EXAMPLES

HEART = EXAMPLES / "heart_disease" / "heart_disease.toml"
LEVELS = {"cp": [1, 2, 3, 4], "restecg": [0, 1, 2]}
SECAGG = {"secure": "secagg+", "threshold": 2, "neighbours": 3}


def heart(aggregation=None, levels=None, **run):
    cfg = load_config(HEART)
    raw = cfg.model_dump(exclude={"base_dir"})
    raw["run"].update(compare=False, **run)
    raw["aggregation"].update(aggregation or {})
    raw["data"]["levels"] = levels
    return parse_config(raw, cfg.base_dir)


def unchecked(cfg, **aggregation):
    """`cfg` with other [aggregation] settings, not validated again (as a program that builds
    its config in code may hand run_session one)."""
    return cfg.model_copy(update={"aggregation": cfg.aggregation.model_copy(
        update=aggregation)})


def run(cfg, monkeypatch):
    """(simulation result, its preprocessor and admission, replies the server received at
    the prepare stage, the institutions)."""
    seen: list[Reply] = []
    fitted: dict = {}
    institutions: dict = {}
    original_poll = InProcessTransport.poll
    original_prepare = session_module.federated_preprocessing

    def poll(self, timeout=None):
        institutions.update(self._clients)
        for reply in original_poll(self, timeout):
            if "/prepare/" in reply.task_id:
                seen.append(reply)
            yield reply

    def prepare(*args, **kwargs):
        fitted["pre"], fitted["admission"] = original_prepare(*args, **kwargs)
        return fitted["pre"], fitted["admission"]

    monkeypatch.setattr(InProcessTransport, "poll", poll)
    monkeypatch.setattr(session_module, "federated_preprocessing", prepare)
    result = run_simulation(cfg, write=False)
    return result, fitted["pre"], fitted["admission"], seen, institutions


def leaves(value) -> list:  # type: ignore[no-untyped-def]
    """Every scalar (number or string) inside nested payloads."""
    if isinstance(value, dict):
        return [x for v in value.values() for x in leaves(v)]
    if isinstance(value, (list, tuple)):
        return [x for v in value for x in leaves(v)]
    return [value]


def clear_statistics(institutions, schema) -> dict[str, LocalStatistics]:
    return {n: LocalStatistics.of(next(iter(i._splits.values())).train, schema)
            for n, i in institutions.items()}


def test_the_server_sees_only_row_counts_and_masked_vectors_and_fits_the_same(monkeypatch):
    plain, plain_pre, plain_adm, plain_seen, _ = run(heart(), monkeypatch)  # secure = "none"
    monkeypatch.undo()
    secure, pre, admission, seen, institutions = run(heart(SECAGG, LEVELS), monkeypatch)

    # the clear prepare stage sent every institution's statistics ...
    assert all("statistics" in r.payload for r in plain_seen)
    stats = clear_statistics(institutions, pre.schema)
    assert set(stats) == {"cleveland", "hungary", "switzerland", "va-long-beach"}
    # ... the secure one only row counts, SecAgg+ keys and shares, and masked vectors
    assert seen and not any(r.error for r in seen)
    for reply in seen:
        assert set(reply.payload) <= {"rows", "test_rows", "stage"}
        if reply.update is not None:
            assert list(reply.update) == ["statistics"]
            assert reply.update["statistics"].dtype == FIXED.dtype
    masked = {r.client_id: r.update["statistics"] for r in seen if r.update is not None}
    assert sorted(masked) == sorted(stats)
    sent = set(leaves([r.payload for r in seen]))  # every number and string the server got
    for name, s in stats.items():
        sums = {s.numeric["age"][1], s.numeric["chol"][1], s.numeric["age"][2]}
        assert not sent & (sums | {f"{v:g}" for v in sums} | {str(v) for v in sums})
        own = FIXED.encode(limbs(Layout.of(pre.schema, LEVELS).vector(s)))
        assert not np.array_equal(masked[name], own)  # masked, not merely encoded
        assert np.mean(masked[name] == own) < 0.01
    rows = {r.client_id: r.payload["rows"] for r in seen if "rows" in r.payload}
    assert rows == {n: s.rows for n, s in stats.items()} == dict(admission.train_rows)
    assert admission.test_rows == plain_adm.test_rows and admission.refused == {}

    # the same preprocessing as the clear merge, up to fixed point
    assert pre.levels == plain_pre.levels and pre.classes == plain_pre.classes
    for column in pre.means:
        assert pre.means[column] == pytest.approx(plain_pre.means[column], abs=1e-6)
        assert pre.stds[column] == pytest.approx(plain_pre.stds[column], abs=1e-6)
    assert abs(secure.final["accuracy"] - plain.final["accuracy"]) <= 0.01
    assert "aborted" not in secure.history.events[-1].metrics


def test_without_secure_aggregation_nothing_changes(monkeypatch):
    result, pre, _, seen, institutions = run(heart(), monkeypatch)
    monkeypatch.undo()
    declared, pre_declared, _, _, _ = run(heart(levels=LEVELS), monkeypatch)
    stats = clear_statistics(institutions, pre.schema)
    assert [r.payload["statistics"] for r in seen] == [stats[n].to_dict() for n in sorted(stats)]
    merged = merge_all([stats[n] for n in sorted(stats)])
    assert pre == Preprocessor.from_statistics(merged, pre.schema) == pre_declared
    for name, value in result.history.params.items():  # bit-identical
        assert np.array_equal(declared.history.params[name], value)


def test_a_label_outside_the_declared_levels_stops_the_run_naming_the_column():
    with pytest.raises(DataError, match="column 'cp' holds a level that is not in the "
                                        "declared"):
        run_simulation(heart(SECAGG, {**LEVELS, "cp": [1, 2, 3]}), write=False)


@pytest.mark.parametrize("secure", [SECAGG, {"secure": "secagg", "threshold": 2},
                                    {"secure": "ckks"}], ids=lambda s: s["secure"])
def test_a_secure_run_without_declared_levels_is_refused_before_anything_is_sent(
        monkeypatch, secure):
    """A secure run never sends statistics in the clear: without the levels of a categorical
    column it is refused, naming the column and the TOML line to add (column names only)."""
    with pytest.raises(ConfigError, match=r"needs the levels of \['restecg'\] declared.*add to "
                                          r"\[data\]: levels = \{ restecg = \[\.\.\.\] \}"):
        heart(secure, {"cp": [1, 2, 3, 4]})  # on loading the config
    # a config built in code (not validated again) is refused by the run, before any task
    dispatched: list = []
    monkeypatch.setattr(InProcessTransport, "dispatch",
                        lambda self, tasks: dispatched.extend(tasks))
    cfg = unchecked(heart(levels={"cp": [1, 2, 3, 4]}), **secure)
    with pytest.raises(ConfigError, match=r"levels = \{ restecg = \[\.\.\.\] \}") as e:
        run_simulation(cfg, write=False)
    assert dispatched == []  # no prepare task reached an institution
    for value in ("0", "1", "2", "normal"):  # no value of the column is quoted
        assert f"'{value}'" not in str(e.value) and f"[{value}" not in str(e.value)
    with pytest.raises(ConfigError, match=r"\['cp', 'restecg'\].*levels = \{ cp = \[\.\.\.\], "
                                          r"restecg = \[\.\.\.\] \}"):
        run_simulation(unchecked(heart(), **secure), write=False)
    assert dispatched == []
    schema = Schema("num", "binary", ("age",), ("cp", "restecg"), positive_above=0)
    with pytest.raises(ConfigError, match="needs \\[data\\] levels for \\['restecg'\\]"):
        Layout.of(schema, {"cp": ["1"]})


def test_a_multiclass_target_without_declared_classes_is_refused():
    with pytest.raises(ConfigError, match=r"\['num'\].*levels = \{ num = \[\.\.\.\] \}"):
        cfg = load_config(HEART)
        raw = cfg.model_dump(exclude={"base_dir"})
        raw["data"].update(task="multiclass", positive_above=None, levels=LEVELS)
        raw["aggregation"].update(SECAGG)
        parse_config(raw, cfg.base_dir)


def test_ckks_sums_the_statistics_with_secagg_too(monkeypatch):
    """CKKS fit rounds; the prepare stage masks with SecAgg (everyone's neighbour, a
    majority threshold), so no institution's statistics leave it in the clear."""
    _, pre, _, seen, _ = run(heart({"secure": "ckks"}, LEVELS, rounds=1), monkeypatch)
    monkeypatch.undo()
    _, plain_pre, _, _, _ = run(heart(rounds=1), monkeypatch)
    assert seen and not any(r.error for r in seen)
    assert not any("statistics" in r.payload for r in seen)
    assert sum(r.update is not None for r in seen) == 4  # four masked vectors
    assert pre.levels == plain_pre.levels and pre.classes == plain_pre.classes
    for column in pre.means:
        assert pre.means[column] == pytest.approx(plain_pre.means[column], abs=1e-6)


def test_ckks_with_too_few_institutions_for_secagg_is_refused():
    from fedsilo.engine.secure_prepare import with_threshold

    config = {"secure": {"protocol": {"threshold": None, "neighbours": None, "seed": 1}}}
    assert with_threshold(config, 4)["secure"]["protocol"]["threshold"] == 2
    assert with_threshold(config, 7)["secure"]["protocol"]["threshold"] == 4
    with pytest.raises(ConfigError, match="at least 3 institutions, 2 available"):
        with_threshold(config, 2)


def test_limbs_carry_large_sums_exactly_enough():
    x = np.array([0.0, -1.5, 3.0e15, -7.25e19, 12345.678, 2.0**67])
    parts = [FIXED.encode(limbs(x)) for _ in range(5)]
    total = np.zeros_like(parts[0])
    for p in parts:
        np.add(total, p, out=total)
    np.testing.assert_allclose(unlimb(FIXED.decode(total)), 5 * x, rtol=1e-12, atol=1e-3)
    with pytest.raises(DataError, match="beyond"):
        limbs(np.array([2.0**69]))


def test_forged_statistics_that_break_the_sum_stop_the_run_naming_no_one(monkeypatch):
    import fedsilo.engine.secure_prepare as secure_prepare

    honest = secure_prepare.limbs
    calls = []

    def forged(vector):  # the first institution claims a sum of squares of age of 0
        calls.append(1)
        if len(calls) == 1:
            vector = vector.copy()
            vector[2] = 0.0
        return honest(vector)

    monkeypatch.setattr(secure_prepare, "limbs", forged)
    with pytest.raises(DataError, match="summed statistics of 4 institutions are not "
                                        "plausible .*sum of squares.*hides which") as e:
        run_simulation(heart(SECAGG, LEVELS, rounds=1), write=False)
    assert not any(n in str(e.value) for n in ("cleveland", "hungary", "switzerland", "va-"))


def test_an_institution_whose_policy_wants_a_higher_threshold_sends_nothing():
    from fedsilo.aggregation.secure.identity import SimulatedCA
    from fedsilo.client.institution import Institution
    from fedsilo.client.policy import SitePolicy
    from fedsilo.config.build import build_schema
    from fedsilo.engine.prepare import federated_preprocessing, prepare_config
    from fedsilo.engine.secure_prepare import prepare_spec
    from fedsilo.simulation.institutions import load_tables

    cfg = heart(SECAGG, LEVELS)
    tables = load_tables(cfg)
    schema = build_schema(cfg, next(iter(tables.values())))
    ca = SimulatedCA()
    strict = SitePolicy.model_validate({"min_threshold": 3})
    transport = InProcessTransport({n: Institution(n, t, keys=ca.keys(n),
                                                   policy=strict if n == "hungary" else None)
                                    for n, t in sorted(tables.items())})
    prepare = prepare_config(schema, {}, cfg.data.test_fraction, cfg.run.seed)
    spec = prepare_spec(cfg.aggregation, cfg.data, cfg.run.seed, schema)
    _, admission = federated_preprocessing(transport, {**prepare, "secure": spec}, "r", 1,
                                           keys=ca.trust_keys())
    assert sorted(admission.train_rows) == ["cleveland", "switzerland", "va-long-beach"]
