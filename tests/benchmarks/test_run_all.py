"""benchmarks/run_all.py end to end on its cheapest benchmark: the results file describes the
machine and holds the benchmark's records (no timed assertions)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def quick_run(out: Path, benchmark: str) -> None:
    """`run_all.py --quick --only BENCHMARK --out OUT`, which must succeed."""
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "run_all.py"), "--quick",
                           "--only", benchmark, "--out", str(out)],
                          capture_output=True, text=True, timeout=900, cwd=ROOT)  # a hang guard
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_quick_run_of_one_benchmark_writes_the_machine_and_records(tmp_path: Path) -> None:
    quick_run(tmp_path, "aggregation_throughput")
    [found] = tmp_path.glob("*-quick.json")
    results = json.loads(found.read_text())
    assert results["quick"] is True
    machine = results["machine"]
    assert machine["cores"] >= 1 and machine["memory_gib"] > 0 and machine["python"]
    assert machine["numpy"] and "cpu" in machine
    assert [r["benchmark"] for r in results["runs"]] == ["aggregation_throughput"]
    records = results["aggregation_throughput"]
    # Flower's rows run its own functions in .venv-flower, when that venv exists
    flower = {"flower"} if (ROOT / ".venv-flower" / "bin" / "python").exists() else set()
    assert {r["system"] for r in records} == {"fedsilo", "ceiling"} | flower
    for record in records:
        assert record["k"] == 10 and record["n"] == 100_000 and record["gb_per_s"] > 0
        assert all(not isinstance(v, dict | list) for v in record.values())  # flat
    assert any("accept" in r["path"] for r in records)
    assert found.with_suffix(".md").read_text().startswith("# Benchmark results")


def test_a_merged_run_keeps_each_runs_commit(tmp_path: Path) -> None:
    """`--only` merges into the day's file: the runs kept from it keep the commit they were
    measured at, and the header no longer names one commit for all."""
    quick_run(tmp_path, "psi")
    [found] = tmp_path.glob("*-quick.json")
    first = json.loads(found.read_text())
    now = first["machine"]["git_commit"]
    assert first["runs"][0]["commit"] == now
    del first["runs"][0]["commit"]  # a file written before runs recorded their commit,
    first["machine"]["git_commit"] = "0ld0000"  # measured at another commit
    found.write_text(json.dumps(first))
    quick_run(tmp_path, "aggregation_throughput")
    merged = json.loads(found.read_text())
    assert {r["benchmark"]: r["commit"] for r in merged["runs"]} == {
        "psi": "0ld0000", "aggregation_throughput": now}
    assert merged["machine"]["git_commit"].startswith("several")
