"""The side-value prefixes TopK leaves dense (core/side_values.py) are those the registered
client works declare (algorithms/registry.py)."""

from fedsilo.algorithms.registry import CLIENT_WORKS
from fedsilo.core.side_values import AUX_PREFIXES


def test_aux_prefixes_are_the_registered_ones() -> None:
    declared = {name: half.aux_prefix for name, half in CLIENT_WORKS.items()
                if half.aux_prefix is not None}
    assert declared == AUX_PREFIXES
