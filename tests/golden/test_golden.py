"""Golden results: every strategy x protection x run mode of tests/golden/combos.py, rerun on
the heart-disease example, gives bit for bit the recorded final parameters (digest) and
per-round metrics, or the same refusal. Re-record (only on purpose, when results are meant
to change) with `.venv/bin/python tests/golden/record.py`."""

from __future__ import annotations

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
    # server metrics: every recorded value, bit for bit (a new metric is not a difference)
    assert len(got["metrics"]) == len(want["metrics"])
    for event, (g, w) in enumerate(zip(got["metrics"], want["metrics"])):
        g, w = canonical(_flat(g)), canonical(_flat(w))
        assert {k: g.get(k, "<missing>") for k in w} == w, f"event {event}"
    assert canonical(got.get("virtual_time")) == canonical(want.get("virtual_time"))
    assert got["digest"] == want["digest"]
