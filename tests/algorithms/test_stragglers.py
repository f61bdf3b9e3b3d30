"""Systems heterogeneity: stragglers drop out or do part of the work, deterministically."""

import pytest

from fedsilo.algorithms.sampling import Stragglers
from fedsilo.errors import ConfigError

COHORT = {f"c{i}": {"epochs": 20, "lr": 0.1} for i in range(10)}


def test_drop_policy_removes_the_stragglers_from_the_round():
    out = Stragglers(0.9, "drop").apply(dict(COHORT), 3, seed=1)
    assert len(out) == 1 and all(c["epochs"] == 20 for c in out.values())


def test_partial_policy_keeps_everyone_with_1_to_E_epochs():
    out = Stragglers(0.5, "partial").apply(dict(COHORT), 3, seed=1)
    assert set(out) == set(COHORT)
    cut = [c for c in out.values() if c["epochs"] != 20]
    assert 1 <= len(cut) <= 5 and all(1 <= c["epochs"] <= 20 for c in out.values())


def test_steps_are_cut_when_the_work_is_counted_in_steps():
    cohort = {f"c{i}": {"epochs": None, "steps": 50} for i in range(4)}
    out = Stragglers(1.0, "partial").apply(cohort, 1, seed=0)
    assert all(1 <= c["steps"] <= 50 and c["epochs"] is None for c in out.values())


def test_the_draw_depends_on_round_and_seed_only():
    a = Stragglers(0.5, "drop").apply(dict(COHORT), 4, seed=9)
    b = Stragglers(0.5, "drop").apply(dict(COHORT), 4, seed=9)
    c = Stragglers(0.5, "drop").apply(dict(COHORT), 5, seed=9)
    assert a == b and set(a) != set(c)


@pytest.mark.parametrize("kw", [{"fraction": 1.5}, {"fraction": 0.5, "policy": "wait"}])
def test_bad_settings_are_refused(kw):
    with pytest.raises(ConfigError, match="stragglers"):
        Stragglers(**kw)
