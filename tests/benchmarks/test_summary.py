"""README's benchmark section is generated from the newest results file, never typed, and
the goals it reports are checked against the figures of that file."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

import summary  # noqa: E402


def test_readme_section_is_the_newest_results_rendered() -> None:
    assert summary.readme_section() == summary.section(), (
        "README's benchmark section differs from the newest results file: run "
        "`python benchmarks/summary.py --write-readme`")


def _results(**benchmarks: object) -> dict:
    machine = {"cpu": "test CPU", "cores_usable": 2, "memory_gib": 8.0, "python": "3.11",
               "git_commit": "abc", "load_average_1m_at_start": 0.1,
               "load_average_1m_at_end": 0.2, "flwr": "1.42.0", "nvflare": None}
    return {"date": "2026-01-01", "quick": False, "machine": machine, "skipped": [],
            "runs": [], **benchmarks}


def _goal_rows(text: str) -> dict[str, list[str]]:
    rows = [line.strip("|").split(" | ") for line in text.splitlines()
            if line.startswith("| ") and ("≤" in line or "≥" in line)]
    return {r[0].strip(): [c.strip() for c in r[1:]] for r in rows}


def test_goals_are_judged_from_the_records() -> None:
    res = _results(
        deployment_round=[{"n": 1_000_000, "repeats": 3, "fedsilo_round_ms": 50.0,
                           "raw_round_ms": 40.0, "fedsilo_vs_raw": 1.25},
                          {"n": 10_000_000, "repeats": 3, "fedsilo_round_ms": 500.0,
                           "raw_round_ms": 300.0, "fedsilo_vs_raw": 1.67}],
        ray_scaling=[{"system": s, "k": 1000, "params": 85_002, "rounds": 3, "round_s": t,
                      "peak_rss_mb": 900.0} for s, t in
                     (("fedsilo", 8.0), ("fedsilo-ray", 8.4), ("flower", 60.0))],
        simulation_digits=[{"system": s, "workload": "federated", "k": 100, "rounds": 20,
                            "epochs": 2, "batch": 8, "evaluation": "every institution",
                            "wall_s": w, "steady_round_s": w / 20, "peak_rss_mb": m,
                            "accuracy": 0.8} for s, w, m in
                           (("fedsilo", 10.0, 400.0), ("flower", 150.0, 2000.0))])
    text = summary.render(res, "2026-01-01.json")
    goals = _goal_rows(text)
    assert goals["deployment round, N = 1,000,000"][1:] == ["1.25x", "met"]
    assert goals["deployment round, N = 10,000,000"][1:] == ["1.67x", "missed"]
    assert goals["Ray, K = 1,000: per-round time"][1:] == ["1.05x", "met"]
    assert goals["same, against Flower's Ray simulation"][1:] == ["7.14x", "met"]
    assert goals["simulation, digits K = 100, 20 rounds: wall time"][1:] == ["15.00x", "missed"]
    assert goals["same, peak memory (process tree)"][1:] == ["1/5.00", "missed"]
    assert goals["aggregation accept + commit, 100 × 1M float32"][1:] == ["not measured", "—"]
    assert "| 1,000 | 8.00 s, 900 MB | 8.40 s, 900 MB | 60.0 s, 900 MB | 1.1x | 7.1x |" in text


def test_write_readme_replaces_only_the_marked_section(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\nbefore\n{summary.BEGIN}\nold table\n{summary.END}\nafter\n")
    folder = tmp_path / "results"
    folder.mkdir()
    (folder / "2026-01-01.json").write_text(json.dumps(_results()))
    (folder / "2026-02-01-quick.json").write_text("{}")  # quick runs are never shown
    assert summary.write_readme(readme, folder) is True
    text = readme.read_text()
    assert text.startswith("# x\n\nbefore\n") and text.endswith(f"{summary.END}\nafter\n")
    assert "old table" not in text and "on 2026-01-01 (2026-01-01.json)" in text
    assert summary.write_readme(readme, folder) is False  # unchanged the second time


@pytest.mark.parametrize("name", ["", "a"])
def test_no_results_says_so(tmp_path: Path, name: str) -> None:
    if name:
        (tmp_path / "2026-01-01-quick.json").write_text("{}")
    assert summary.section(tmp_path).startswith("No full benchmark run is checked in yet")
