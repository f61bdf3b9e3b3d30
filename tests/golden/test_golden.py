"""Golden results: every strategy x protection x run mode of tests/golden/combos.py, rerun on
the heart-disease example, gives bit for bit the recorded final parameters (digest) and
per-round evaluation metrics, or the same refusal. The server's diagnostic metrics (norms of
updates) are compared to within 1e-12 relative: numpy's reductions take a CPU-dependent SIMD
path, so a norm may differ in its last bit from one machine to another while the parameters
and their digest are the same bit for bit. Re-record (only on purpose, when results are meant
to change) with `.venv/bin/python tests/golden/record.py`."""

from __future__ import annotations

import math
from typing import Any

import pytest

from tests.golden.combos import COMBOS, GOLDEN, KEYS, canonical, key, load_golden, run_combo

_GOLDEN = load_golden() if GOLDEN.is_file() else {}


def _flat(tree: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(tree, dict):
        return {prefix: tree}
    out: dict[str, Any] = {}
    for k, v in tree.items():
        out.update(_flat(v, f"{prefix}.{k}" if prefix else k))
    return out


def _near(got: Any, want: Any) -> Any:
    """`want`'s canonical form where `got` is within 1e-12 of it, else `got`'s."""
    if isinstance(got, float) and isinstance(want, float) and math.isclose(got, want,
                                                                           rel_tol=1e-12):
        return canonical(want)
    return canonical(got)


def test_golden_file_covers_every_combination():
    assert sorted(_GOLDEN) == sorted(KEYS), "combinations changed: rerun tests/golden/record.py"


@pytest.mark.parametrize("combo", COMBOS, ids=KEYS)
def test_same_results_as_recorded(combo):
    want = _GOLDEN.get(key(*combo))
    if want is None:
        pytest.fail(f"{key(*combo)} not in {GOLDEN.name}: rerun tests/golden/record.py")
    got = run_combo(*combo)
    if "refused" in want or "refused" in got:
        assert {k: got.get(k) for k in ("refused", "stage")} == \
               {k: want.get(k) for k in ("refused", "stage")}
        return
    assert canonical(got["history"]) == canonical(want["history"])
    # server metrics: every recorded value (a new metric is not a difference)
    assert len(got["metrics"]) == len(want["metrics"])
    for event, (g, w) in enumerate(zip(got["metrics"], want["metrics"])):
        g, w = _flat(g), _flat(w)
        assert {k: _near(g.get(k, "<missing>"), v) for k, v in w.items()} == \
               {k: canonical(v) for k, v in w.items()}, f"event {event}"
    assert canonical(got.get("virtual_time")) == canonical(want.get("virtual_time"))
    assert got["digest"] == want["digest"]
