"""With 20% of institutions sending sign-flipped or scaled updates, FedAvg without its default
bound collapses, the default bound neutralises the scaled ones, and the robust rules stay
within 2 points of the clean run (digits, 10 institutions, MLP)."""

import pytest

from fedsilo.simulation.attacks import Attacker, with_attackers
from tests.conftest import load_example

EXAMPLE = load_example("robustness/attack_table.py")
TABLES = EXAMPLE.digits_tables(10)


def accuracy(aggregation: dict, attack: dict) -> float:
    return EXAMPLE.accuracy(TABLES, aggregation, attack)


@pytest.fixture(scope="module")
def clean() -> float:
    return accuracy({}, {})


ATTACKS = [{"fraction": 0.2, "kind": "sign_flip", "scale": 4.0},
           {"fraction": 0.2, "kind": "scale", "scale": 100.0}]
ROBUST = [{"robust": "median"}, {"robust": "trimmed_mean", "trim_fraction": 0.2},
          {"robust": "multikrum", "byzantine": 2}]


@pytest.mark.parametrize("attack", ATTACKS, ids=lambda a: a["kind"])
def test_fedavg_collapses_under_attack(clean, attack):
    assert clean > 0.9
    assert accuracy({"default_bound": False}, attack) < clean - 0.3


def test_the_default_bound_neutralises_scaled_updates(clean):
    assert accuracy({}, ATTACKS[1]) >= clean - 0.02


@pytest.mark.parametrize("attack", ATTACKS, ids=lambda a: a["kind"])
@pytest.mark.parametrize("rule", ROBUST, ids=lambda r: r["robust"])
def test_robust_rules_stay_within_two_points_of_the_clean_run(clean, attack, rule):
    assert accuracy(rule, attack) >= clean - 0.02


def test_two_of_ten_institutions_become_attackers_deterministically():
    handlers = {n: object() for n in TABLES}
    a, bad = with_attackers(handlers, 0.2, "sign_flip", 4.0, seed=1)  # type: ignore[arg-type]
    _, again = with_attackers(handlers, 0.2, "sign_flip", 4.0, seed=1)  # type: ignore[arg-type]
    assert len(bad) == 2 and bad == again
    assert sum(isinstance(h, Attacker) for h in a.values()) == 2
