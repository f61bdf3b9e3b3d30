"""Run every benchmark and collect the figures: `benchmarks/results/<date>.json` (the machine,
then each benchmark's records: a list of flat dicts, the workload stated in their fields),
`<date>.md` (the same as Markdown tables) and PNG plots next to them (round time against K
and against model size, fedsilo, Flower and NVFlare where measured; peak memory against K; a
simulated round's time against K in process, on Ray and in Flower's simulation).

Each benchmark is its own script, run as a child process with `--json`; a failing one is
recorded (with the end of its output) and the others still run. Peers that are not installed
(Flower: `.venv-flower`, NVIDIA FLARE: `.venv-nvflare`; `bash benchmarks/setup-peers.sh` makes
both) are skipped, and the JSON says so. `--quick` runs tiny sizes (a few
minutes on a 2-core machine) and writes `<date>-quick.*`, which the docs never show;
`--only NAME ...` runs some benchmarks and merges them into the day's file (each run
keeps the commit it was measured at; README's run list names them when they differ).

    python benchmarks/run_all.py [--quick] [--only aggregation_throughput ...] [--out DIR]
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.metadata
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
FLOWER = ROOT / ".venv-flower" / "bin" / "python"
NVFLARE = ROOT / ".venv-nvflare" / "bin" / "python"

# name -> (script, full arguments, --quick arguments)
BENCHMARKS: dict[str, tuple[str, list[str], list[str]]] = {
    "aggregation_throughput": ("aggregation_throughput.py", [],
                               ["--k", "10", "--n", "100000", "--repeat", "3"]),
    "secure_aggregation": ("secure_aggregation.py", ["--k", "10", "100"],
                           ["--k", "10", "--n", "10000", "--rounds", "3", "--flower-k"]),
    "secure_aggregation_ring32": ("secure_aggregation.py", ["--ring", "32", "--flower-k"],
                                  ["--ring", "32", "--k", "10", "--n", "10000", "--rounds",
                                   "3", "--flower-k"]),
    "round_scaling": ("round_scaling.py", [],
                      ["--k", "10", "30", "--n", "10000", "100000", "--rounds", "3"]),
    "ray_scaling": ("ray_scaling.py", ["--k", "100", "1000", "5000", "--rounds", "3",
                                       "--flower-k", "100", "1000"],
                    ["--k", "20", "--rounds", "2"]),
    "simulation_digits": ("simulation_digits.py", ["--workload", "federated"],
                          ["--k", "10", "--rounds", "3", "--workload", "central"]),
    "simulation_digits_central": ("simulation_digits.py", ["--workload", "central"], []),
    "deployment_round": ("deployment_round.py", [],
                         ["--sizes", "1000", "100000", "--rounds", "3", "--repeats", "1",
                          "--skip-flower", "--skip-nvflare"]),  # peers' deployments: too slow
    "async_time_to_accuracy": ("async_time_to_accuracy.py", [],
                               ["--seeds", "0"]),
    "compression": ("compression.py", [], ["--fractions", "0.1"]),
    "psi": ("psi.py", ["--n", "1e5"], ["--n", "2000"]),  # 1e6: ~8 min, by hand
    "vertical": ("vertical.py", [], ["--rows", "2000"]),
    "trees": ("trees.py", [], ["--skip-a", "--rounds", "4"]),  # bagging needs R >= K (4)
}
QUICK_SKIP = {"simulation_digits_central": "the quick run's simulation_digits is the "
                                           "central workload already"}
FULL_NOTES = {"ray_scaling": "Flower at K = 5,000 left out: its K = 1,000 run alone takes "
                             "over 4 minutes here and its round time grows linearly with K"}
SEVERAL = "several (each run's own in runs)"  # the header of a file merged from several commits
QUICK_NOTES = {"secure_aggregation": "quick: Flower's SecAgg+ comparison off",
               "secure_aggregation_ring32": "quick: Flower's SecAgg+ comparison off",
               "deployment_round": "quick: Flower's and NVFlare's deployments off (a minute "
                                   "or more each)"}


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def _peer_version(python: Path, package: str) -> str | None:
    """`package`'s version in a peer's venv, or None when that venv is missing."""
    if not python.exists():
        return None
    out = subprocess.run([str(python), "-c", "import importlib.metadata as m; "
                          f"print(m.version({package!r}))"], capture_output=True, text=True)
    return out.stdout.strip() or None


def _flower_version() -> str | None:
    return _peer_version(FLOWER, "flwr")


def _nvflare_version() -> str | None:
    return _peer_version(NVFLARE, "nvflare")


def machine() -> dict[str, Any]:
    """What the figures were measured on: CPU, cores, memory, software, and the load."""
    cpu = next((line.split(":", 1)[1].strip() for line in
                Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) \
        if Path("/proc/cpuinfo").exists() else platform.processor()
    mem_kb = next((int(line.split()[1]) for line in Path("/proc/meminfo").read_text()
                   .splitlines() if line.startswith("MemTotal")), 0) \
        if Path("/proc/meminfo").exists() else 0
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                            capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True,
                           text=True).stdout.strip()
    return {"cpu": cpu, "cores": os.cpu_count(),
            "cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
            else os.cpu_count(),
            "memory_gib": round(mem_kb / 2**20, 1), "os": platform.platform(),
            "python": platform.python_version(),
            **{p: _version(p) for p in ("fedsilo", "numpy", "torch", "grpcio")},
            "flwr": _flower_version(), "nvflare": _nvflare_version(),
            "git_commit": commit + ("+changes" if dirty else ""),
            "load_average_1m_at_start": round(os.getloadavg()[0], 2)}


def flatten(record: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dicts become dotted keys, so every record is flat."""
    out: dict[str, Any] = {}
    for key, value in record.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def records_of(data: Any) -> tuple[list[dict[str, Any]], list[str]]:
    """A script's JSON as flat records: its `records`, each list of records of another key
    (with a `table` field), or the whole object as one record; and what it skipped."""
    skipped = list(data.get("skipped", [])) if isinstance(data, dict) else []
    if isinstance(data, dict) and "records" in data:
        return [flatten(r) for r in data["records"]], skipped
    if isinstance(data, dict):
        tables = {k: v for k, v in data.items()
                  if isinstance(v, list) and v and all(isinstance(r, dict) for r in v)}
        if tables:
            return [flatten({"table": k, **r}) for k, v in tables.items() for r in v], skipped
        return [flatten(data)], skipped
    return [flatten(r) for r in data], skipped


def run_one(name: str, quick: bool) -> dict[str, Any]:
    """Run one benchmark script; its records, what it skipped, and how the run went."""
    script, full, small = BENCHMARKS[name]
    args = small if quick else full
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out.json"
        cmd = [sys.executable, str(HERE / script), *args, "--json", str(out)]
        print(f"== {name}: {' '.join(cmd[1:-2])}", flush=True)
        load_start = round(os.getloadavg()[0], 2)
        start = time.perf_counter()
        errors = Path(tmp) / "stderr.txt"
        lines: list[str] = []
        with errors.open("w") as err:
            proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=err,
                                    text=True, env={**os.environ, "PYTHONPATH": str(HERE)})
            assert proc.stdout is not None
            for line in proc.stdout:  # show the script's progress as it goes
                print(line, end="", flush=True)
                lines.append(line)
            proc.wait()
        seconds = time.perf_counter() - start
        run = {"benchmark": name, "args": " ".join([script, *args]),
               "seconds": round(seconds, 1), "returncode": proc.returncode,
               "when": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
               "load_1m_start": load_start, "load_1m_end": round(os.getloadavg()[0], 2)}
        if proc.returncode != 0 or not out.exists():
            tail = (errors.read_text() or "".join(lines))[-1500:]
            print(f"   {name} failed ({proc.returncode}):\n{tail}", flush=True)
            return {"run": {**run, "error": tail.strip().splitlines()[-1] if tail.strip()
                            else "no output"}, "records": [], "skipped": []}
        records, skipped = records_of(json.loads(out.read_text()))
    notes = QUICK_NOTES if quick else FULL_NOTES
    if name in notes:
        skipped.append(notes[name])
    return {"run": run, "records": records, "skipped": [f"{name}: {s}" for s in skipped]}


def markdown(results: dict[str, Any]) -> str:
    """The results as Markdown: the machine, then one table per benchmark."""
    def cell(v: Any) -> str:
        text = f"{v:.4g}" if isinstance(v, float) else "" if v is None else str(v)
        return text.replace("|", "\\|")

    def table(rows: list[dict[str, Any]]) -> list[str]:
        cols: list[str] = []
        for r in rows:
            cols += [k for k in r if k not in cols]
        return (["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
                + ["| " + " | ".join(cell(r.get(c)) for c in cols) + " |" for r in rows])

    out = [f"# Benchmark results {results['date']}{' (quick)' if results['quick'] else ''}",
           "", "## machine", ""] + table([results["machine"]]) + [""]
    if results["skipped"]:
        out += ["Skipped:", ""] + [f"- {s}" for s in results["skipped"]] + [""]
    out += ["## runs", ""] + table(results["runs"]) + [""]
    for name in BENCHMARKS:
        if results.get(name):
            out += [f"## {name}", ""] + table(results[name]) + [""]
    return "\n".join(out)


LABELS = {"fedsilo": "fedsilo (in process)",
          "fedsilo-ray": "fedsilo on Ray (one actor per CPU)",
          "flower": "Flower 1.42 simulation (Ray, 1 CPU per client)",
          "nvflare": "NVFlare 2.9 simulator (SimEnv, one process per site)"}


def plot(results: dict[str, Any], prefix: Path) -> list[Path]:
    """Round time against K and against N, peak memory against K (from round_scaling), and
    round time against K of the three simulations (from ray_scaling)."""
    rows = [r for r in results.get("round_scaling", []) if "round_s" in r]
    ray = [r for r in results.get("ray_scaling", []) if "round_s" in r]
    if not rows and not ray:
        return []
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    made = []
    figures = [(rows, "K", "k", "round_s", "institutions K", "seconds per round",
                "round-time-vs-k"),
               (rows, "N", "n", "round_s", "model size N (float32 parameters)",
                "seconds per round", "round-time-vs-n"),
               (rows, "K", "k", "peak_rss_mb", "institutions K",
                "peak memory, MB (process tree)", "memory-vs-k"),
               (ray, "K", "k", "round_s", "institutions K",
                "seconds per round (after the first)", "ray-round-time-vs-k")]
    for source, sweep, x, y, xlabel, ylabel, name in figures:
        points = [r for r in source if r["sweep"] == sweep]
        if not points:
            continue
        fig, ax = plt.subplots(figsize=(5.5, 3.8))
        for system in sorted({r["system"] for r in points}):
            mine = sorted((r[x], r[y]) for r in points if r["system"] == system)
            ax.plot([p[0] for p in mine], [p[1] for p in mine], marker="o",
                    label=LABELS.get(system, system))
        if source is ray:
            title = f"simulated FedAvg round, MLP of {points[0]['params']:,} parameters"
        else:
            fixed = points[0]["n" if sweep == "K" else "k"]
            title = f"plain FedAvg round, {'N' if sweep == 'K' else 'K'} = {fixed:,}"
        ax.set(xscale="log", yscale="log", xlabel=xlabel, ylabel=ylabel, title=title)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
        fig.tight_layout()
        path = prefix.with_name(f"{prefix.name}-{name}.png")
        fig.savefig(path, dpi=110)
        plt.close(fig)
        made.append(path)
    return made


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="tiny sizes, a few minutes")
    p.add_argument("--only", nargs="+", choices=sorted(BENCHMARKS), metavar="NAME",
                   help=f"run only these: {', '.join(BENCHMARKS)}")
    p.add_argument("--out", type=Path, default=HERE / "results", help="results folder")
    a = p.parse_args()
    names = a.only or [n for n in BENCHMARKS if not (a.quick and n in QUICK_SKIP)]
    date = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d")
    stem = f"{date}-quick" if a.quick else date
    a.out.mkdir(parents=True, exist_ok=True)
    path = a.out / f"{stem}.json"
    results: dict[str, Any] = {"date": date, "quick": a.quick, "machine": machine(),
                               "skipped": [], "runs": []}
    if a.only and path.exists():  # merge into the day's file: keep the other benchmarks
        old = json.loads(path.read_text())
        results["skipped"] = [s for s in old.get("skipped", [])
                              if s.split(":", 1)[0] not in names]
        results["runs"] = [{"commit": old["machine"].get("git_commit"), **r}  # measured at
                           for r in old.get("runs", []) if r["benchmark"] not in names]
        results.update({k: v for k, v in old.items() if k in BENCHMARKS and k not in names})
    if not FLOWER.exists():
        results["skipped"].append(f"flower: not installed ({FLOWER} missing): every Flower "
                                  "comparison skipped")
    if not NVFLARE.exists():
        results["skipped"].append(f"nvflare: not installed ({NVFLARE} missing): every "
                                  "NVFlare comparison skipped")
    for name in names:
        got = run_one(name, a.quick)
        results["runs"].append({**got["run"], "commit": results["machine"]["git_commit"]})
        results["skipped"] += got["skipped"]
        if got["records"]:  # a failed run has none: its row of `runs` says why
            results[name] = got["records"]
    results["machine"]["load_average_1m_at_end"] = round(os.getloadavg()[0], 2)
    if len({r.get("commit") for r in results["runs"]}) > 1:  # a merge of runs at several
        results["machine"]["git_commit"] = SEVERAL
    ordered = {k: results[k] for k in ("date", "quick", "machine", "skipped", "runs")}
    ordered.update({k: results[k] for k in BENCHMARKS if k in results})
    path.write_text(json.dumps(ordered, indent=1, default=str) + "\n")
    (a.out / f"{stem}.md").write_text(markdown(ordered))
    try:
        plots = plot(ordered, a.out / stem)
    except ImportError:
        plots = []
        print("matplotlib is not installed: no plots")
    print(f"\nwrote {path}, {a.out / f'{stem}.md'}" +
          "".join(f", {q}" for q in plots))
    if not a.quick and a.out.resolve() == (HERE / "results").resolve():
        import summary  # README's section, from the newest results file

        print("README's benchmark section:",
              "rewritten" if summary.write_readme() else "unchanged")
    for line in ordered["skipped"]:
        print("skipped", line)
    failed = [r["benchmark"] for r in ordered["runs"] if r["returncode"] != 0]
    if failed:
        print("failed:", ", ".join(failed))
        sys.exit(1)


if __name__ == "__main__":
    main()
