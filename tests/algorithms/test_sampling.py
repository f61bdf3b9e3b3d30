import pytest

from fedsilo.algorithms.sampling import UniformSampler
from fedsilo.errors import AggregationError, ConfigError

CLIENTS = [f"c{i:02d}" for i in range(20)]


def test_fraction_and_minimum():
    assert len(UniformSampler(0.25).sample(CLIENTS, 1, 0)) == 5
    assert len(UniformSampler(0.01, min_clients=3).sample(CLIENTS, 1, 0)) == 3
    assert UniformSampler(1.0).sample(reversed(CLIENTS), 1, 0) == CLIENTS


def test_draw_depends_on_seed_and_round_only():
    s = UniformSampler(0.3)
    assert s.sample(CLIENTS, 4, 9) == s.sample(CLIENTS, 4, 9)
    draws = {tuple(s.sample(CLIENTS, r, 9)) for r in range(1, 11)}
    assert len(draws) > 5


def test_every_institution_is_sampled_eventually():
    s = UniformSampler(0.2)
    seen = {c for r in range(1, 60) for c in s.sample(CLIENTS, r, 1)}
    assert seen == set(CLIENTS)


def test_too_few_available():
    with pytest.raises(AggregationError, match="2 institutions available, min_clients is 3"):
        UniformSampler(1.0, 3).sample(["a", "b"], 1, 0)


def test_bad_fraction():
    with pytest.raises(ConfigError, match="fraction"):
        UniformSampler(0.0)
