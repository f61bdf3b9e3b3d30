"""README's benchmark section, generated from a results file of `run_all.py`, never typed.

The section between README's `<!-- benchmarks:begin -->` and `<!-- benchmarks:end -->`
markers is `render(results)` of the newest full results file in `benchmarks/results/`
(`run_all.py` rewrites it after every full run; `tests/benchmarks/test_summary.py` fails when
README differs). Each table is drawn from one benchmark's records, and every ratio is taken
between figures of the same results file. The goals of issue 19 are checked here too.

    python benchmarks/summary.py [RESULTS.json] [--write-readme]
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"
README = ROOT / "README.md"
BEGIN, END = "<!-- benchmarks:begin -->", "<!-- benchmarks:end -->"
SYSTEMS = {"fedsilo": "fedsilo", "fedsilo-ray": "fedsilo on Ray", "flower": "Flower",
           "nvflare": "NVIDIA FLARE", "raw": "raw gRPC stream"}
Records = list[dict[str, Any]]


def newest(folder: Path = RESULTS) -> Path | None:
    """The newest full results file (names sort by date; quick runs left out), or None."""
    found = sorted(p for p in folder.glob("*.json") if not p.stem.endswith("-quick"))
    return found[-1] if found else None


def _num(value: Any) -> str:
    """Three significant digits (whole numbers from 100 up), or a dash for nothing."""
    if value is None or value == "":
        return "—"
    if isinstance(value, float):
        return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}" if abs(value) < 1 \
            else f"{value:.{2 if abs(value) < 10 else 1}f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def _ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.1f}x" if a is not None and b else "—"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return (["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
            + ["| " + " | ".join(r) + " |" for r in rows])


def _one(records: Records, **match: Any) -> dict[str, Any] | None:
    found = [r for r in records if all(r.get(k) == v for k, v in match.items())]
    return found[0] if found else None


def simulation(res: dict[str, Any]) -> list[str]:
    out: list[str] = []
    for key in ("simulation_digits", "simulation_digits_central"):
        rows = res.get(key) or []
        base = _one(rows, system="fedsilo")
        if not base:
            continue
        title = " (central evaluation)" if key.endswith("central") else ""
        out += [f"### Simulation, digits{title}", "",
                f"{base['k']} institutions, {base['rounds']} rounds, "
                f"{base['epochs']} epoch(s) of batch {base['batch']}, evaluation on "
                f"{base['evaluation']} (`simulation_digits.py --workload {base['workload']}`):", ""]
        table = []
        for r in rows:
            table.append([SYSTEMS.get(r["system"], r["system"]), _num(r["wall_s"]),
                          _num(r.get("steady_round_s")), _num(r["peak_rss_mb"]),
                          _num(r.get("accuracy")),
                          "—" if r is base else f"{_ratio(r['wall_s'], base['wall_s'])} / "
                          f"{_ratio(r['peak_rss_mb'], base['peak_rss_mb'])}"])
        out += _table(["system", "run (s)", "per round after the first (s)",
                       "peak memory, process tree (MB)", "accuracy",
                       "time / memory against fedsilo"], table) + [""]
    return out


def ray_scaling(res: dict[str, Any], images: str | None) -> list[str]:
    rows = res.get("ray_scaling") or []
    if not rows:
        return []
    systems = [s for s in SYSTEMS if any(r["system"] == s for r in rows)]
    first = rows[0]
    out = ["### Scaling with K (Ray)", "",
           f"Synthetic institutions, a model of {first['params']:,} parameters, FedAvg, "
           f"{first['rounds']} rounds (`ray_scaling.py`); seconds per "
           f"round after the first, and peak memory of the whole process tree:", ""]
    table = []
    for k in sorted({r["k"] for r in rows}):
        got = {s: _one(rows, system=s, k=k) for s in systems}
        cells = [f"{k:,}"]
        for s in systems:
            r = got[s]
            cells.append("not run" if r is None else
                         f"{_num(r['round_s'])} s, {_num(r['peak_rss_mb'])} MB")
        inproc, ray, flower = (got.get(s) for s in ("fedsilo", "fedsilo-ray", "flower"))
        cells.append(_ratio(*(r["round_s"] if r else None for r in (ray, inproc))))
        cells.append(_ratio(*(r["round_s"] if r else None for r in (flower, ray))))
        table.append(cells)
    out += _table(["K", *(SYSTEMS[s] for s in systems), "Ray / in process",
                   "Flower / fedsilo on Ray"], table) + [""]
    if images:
        out += [f"![seconds per round against K]({images}-ray-round-time-vs-k.png)", ""]
    return out


def round_scaling(res: dict[str, Any], images: str | None) -> list[str]:
    rows = [r for r in res.get("round_scaling") or [] if "round_s" in r]
    if not rows:
        return []
    out = ["### A plain round against K and model size", "",
           "Each institution returns a fixed step, no evaluation (`round_scaling.py`); "
           "seconds per round:", ""]
    for sweep, x, fixed in (("K", "k", "n"), ("N", "n", "k")):
        points = [r for r in rows if r["sweep"] == sweep]
        if not points:
            continue
        systems = [s for s in SYSTEMS if any(r["system"] == s for r in points)]
        table = [[f"{v:,}", *(_num((_one(points, system=s, **{x: v}) or {}).get("round_s"))
                             for s in systems)]
                 for v in sorted({r[x] for r in points})]
        out += _table([f"{x.upper()} ({fixed.upper()} = {points[0][fixed]:,})",
                       *(SYSTEMS[s] for s in systems)], table) + [""]
    if images:
        out += [f"![round time against K]({images}-round-time-vs-k.png) "
                f"![round time against N]({images}-round-time-vs-n.png) "
                f"![memory against K]({images}-memory-vs-k.png)", ""]
    return out


def deployment(res: dict[str, Any]) -> list[str]:
    rows = res.get("deployment_round") or []
    if not rows:
        return []
    systems = [s for s in ("fedsilo", "raw", "flower", "nvflare")
               if any(f"{s}_round_ms" in r for r in rows)]
    out = ["### Deployment round", "",
           "4 institutions on loopback, fedsilo, the raw gRPC stream and NVFlare over mutual "
           "TLS, Flower without TLS (its TLS set-up is separate; this favours Flower) "
           f"(`deployment_round.py`, median of {rows[0]['repeats']} interleaved repeats):", ""]
    table = []
    for r in rows:
        cells = [f"{r['n']:,} float32"]
        cells += [_num(r.get(f"{s}_round_ms")) + " ms" if r.get(f"{s}_round_ms") else "—"
                  for s in systems]
        cells.append(f"{r['fedsilo_vs_raw']:.2f}x")
        table.append(cells)
    out += _table(["model", *(SYSTEMS[s] for s in systems), "fedsilo / raw"], table) + [""]
    return out


def secure(res: dict[str, Any]) -> list[str]:
    rows = [r for key in ("secure_aggregation", "secure_aggregation_ring32")
            for r in res.get(key) or [] if r.get("system") == "fedsilo"]
    if not rows:
        return []
    out = ["### Secure aggregation", "", "One round in process, updates precomputed "
           "(`secure_aggregation.py`); deployment-equivalent = the server's work plus the "
           "slowest institution's, stage by stage:", ""]
    table = []
    for r in rows:
        if r["protocol"] == "plain":
            continue
        plain = _one(rows, protocol="plain", k=r["k"], n=r["n"])
        table.append([f"{r['k']} × {r['n']:,}", f"{r['ring_bits']}-bit",
                      _num(plain and plain["serial_round_s"]), _num(r["serial_round_s"]),
                      f"{_num(r['deployment_round_s'])} ({r['deployment_vs_plain']:.1f}x)",
                      f"{_num(r['server_s'])} ({r['server_vs_plain']:.1f}x)",
                      f"{_num(r['sent_per_institution_mib'])}"])
    out += _table(["K × N", "ring", "plain round (s)", "SecAgg+ serial (s)",
                   "SecAgg+ deployment-equivalent (s)", "server work (s)",
                   "sent per institution (MiB)"], table) + [""]
    return out


def aggregation(res: dict[str, Any]) -> list[str]:
    rows = res.get("aggregation_throughput") or []
    if not rows:
        return []
    out = ["### Server aggregation", "",
           f"{rows[0]['k']} updates of {rows[0]['n']:,} float32 (`aggregation_throughput.py`, "
           "best of several calls):", ""]
    table = [[SYSTEMS.get(r["system"], r["system"]), r["path"], _num(r["gb_per_s"]),
              _num(r["peak_extra_mib"])] for r in rows]
    return out + _table(["system", "path", "GB/s", "peak extra memory (MiB)"], table) + [""]


def asynchronous(res: dict[str, Any]) -> list[str]:
    rows = res.get("async_time_to_accuracy") or []
    if not rows:
        return []
    out = ["### Asynchronous time to accuracy", "",
           "Simulated time, one institution 5x slower, the target held for 3 evaluations "
           "(`async_time_to_accuracy.py`); speed-up against sync FedAvg, median (range) "
           "over seeds:", ""]
    table = []
    for data, method in dict.fromkeys((r["data"], r["method"]) for r in rows):
        if method == "sync FedAvg":
            continue
        mine = [r for r in rows if (r["data"], r["method"]) == (data, method)]
        got = [r["speedup_vs_sync"] for r in mine if r.get("speedup_vs_sync")]
        if got:
            seeds = (f"{len(mine)} seeds" if len(got) == len(mine)
                     else f"{len(got)} of {len(mine)} seeds; in the rest sync or this method "
                     "missed the target")
            table.append([data, method, f"{statistics.median(got):.1f}x "
                          f"({min(got):.1f}–{max(got):.1f}, {seeds})"])
    return out + _table(["data", "method", "speed-up"], table) + [""]


def _goal(name: str, target: str, value: float | None, ok: Callable[[float], bool],
          shown: Callable[[float], str]) -> list[str]:
    if value is None:
        return [name, target, "not measured", "—"]
    return [name, target, shown(value), "met" if ok(value) else "missed"]


def _div(a: dict[str, Any] | None, b: dict[str, Any] | None, key: str) -> float | None:
    """a[key] / b[key], or None when either record is missing."""
    return a[key] / b[key] if a is not None and b is not None and b[key] else None


def goals(res: dict[str, Any]) -> list[str]:
    """Issue 19's and 18's goals against this results file."""
    rows = []
    dep = res.get("deployment_round") or []
    for n in (1_000_000, 10_000_000):
        r = _one(dep, n=n)
        rows.append(_goal(f"deployment round, N = {n:,}", "≤ 1.3x raw gRPC",
                          r["fedsilo_vs_raw"] if r else None, lambda v: v <= 1.3,
                          lambda v: f"{v:.2f}x"))
    sec = _one(res.get("secure_aggregation") or [], protocol="secagg+", k=100, n=1_000_000)
    rows.append(_goal("SecAgg+ K = 100, N = 1e6, 64-bit, deployment-equivalent", "≤ 2x plain",
                      sec["deployment_vs_plain"] if sec else None, lambda v: v <= 2,
                      lambda v: f"{v:.2f}x"))
    rows.append(_goal("SecAgg+ same, server's work", "≤ 3x plain",
                      sec["server_vs_plain"] if sec else None,
                      lambda v: v <= 3, lambda v: f"{v:.2f}x"))
    sim = res.get("simulation_digits") or []
    ours, flower = _one(sim, system="fedsilo"), _one(sim, system="flower")
    both = ours is not None and flower is not None and ours["k"] == 100
    rows.append(_goal("simulation, digits K = 100, 20 rounds: wall time", "≥ 20x Flower",
                      _div(flower, ours, "wall_s") if both else None, lambda v: v >= 20,
                      lambda v: f"{v:.2f}x"))
    rows.append(_goal("same, peak memory (process tree)", "≤ 1/6 of Flower's",
                      _div(flower, ours, "peak_rss_mb") if both else None, lambda v: v >= 6,
                      lambda v: f"1/{v:.2f}"))
    agg = _one(res.get("aggregation_throughput") or [], system="fedsilo")
    big = agg and agg["k"] == 100 and agg["n"] == 1_000_000
    rows.append(_goal("aggregation accept + commit, 100 × 1M float32", "≥ 20 GB/s",
                      agg["gb_per_s"] if big and agg else None, lambda v: v >= 20,
                      lambda v: f"{v:.1f} GB/s"))
    ray = res.get("ray_scaling") or []
    inproc, onray, fl = (_one(ray, system=s, k=1000) for s in ("fedsilo", "fedsilo-ray", "flower"))
    rows.append(_goal("Ray, K = 1,000: per-round time", "≤ 1.5x in process",
                      _div(onray, inproc, "round_s"),
                      lambda v: v <= 1.5, lambda v: f"{v:.2f}x"))
    rows.append(_goal("same, against Flower's Ray simulation", "≥ 5x faster",
                      _div(fl, onray, "round_s"), lambda v: v >= 5,
                      lambda v: f"{v:.2f}x"))
    return (["### Goals", "", "Issues 18 and 19, judged from the figures above:", ""]
            + _table(["goal", "target", "measured", ""], rows) + [""])


def render(res: dict[str, Any], name: str, images: str | None = None) -> str:
    """The generated Markdown for one results file (`images`: the plots' path prefix for
    README, or None for the docs page, which lists every table after it)."""
    m = res["machine"]
    peers = ", ".join(f"{label} {m[key]}" for key, label in
                      (("flwr", "Flower"), ("nvflare", "NVIDIA FLARE")) if m.get(key))
    head = [f"Measured by `python benchmarks/run_all.py` on {res['date']} ({name}): "
            f"{m['cpu']}, {m['cores_usable']} usable cores, {m['memory_gib']} GiB, Python "
            f"{m['python']}, commit {m['git_commit']}, load average "
            f"{m['load_average_1m_at_start']} at the start and "
            f"{m.get('load_average_1m_at_end', '?')} at the end"
            f"{'; peers: ' + peers if peers else ''}. Same workload for every system in the "
            "same run" + ("; all tables: [docs/benchmarks.md](docs/benchmarks.md)." if images
                          else "."), ""]
    several = len({r.get("commit") for r in res.get("runs", [])}) > 1
    runs = [f"{r['benchmark']} {r['when'][11:]} ({r['seconds']:.0f} s, load {r['load_1m_start']}"
            f"→{r['load_1m_end']}{', commit ' + str(r.get('commit')) if several else ''})"
            for r in res.get("runs", []) if "when" in r]
    if runs:
        head += ["Runs (when each ended, how long it took, the 1-minute load average at its "
                 "start → end): "
                 + "; ".join(runs) + ".", ""]
    if res.get("skipped"):
        head += ["Not run: " + "; ".join(res["skipped"]) + ".", ""]
    parts = [simulation(res), ray_scaling(res, images), round_scaling(res, images),
             deployment(res), secure(res), aggregation(res), asynchronous(res), goals(res)]
    return "\n".join(head + [line for part in parts for line in part]).rstrip() + "\n"


def section(folder: Path = RESULTS) -> str:
    """What README holds between its markers: the newest results, or a sentence saying none."""
    found = newest(folder)
    if found is None:
        return ("No full benchmark run is checked in yet: run "
                "`python benchmarks/run_all.py`.\n")
    return render(json.loads(found.read_text()), found.name,
                  images=f"benchmarks/results/{found.stem}")


def write_readme(readme: Path = README, folder: Path = RESULTS) -> bool:
    """Put the generated section between README's markers; whether README changed."""
    text = readme.read_text()
    start, end = text.index(BEGIN) + len(BEGIN), text.index(END)
    new = text[:start] + "\n" + section(folder) + text[end:]
    if new != text:
        readme.write_text(new)
    return new != text


def readme_section(readme: Path = README) -> str:
    """What README holds between its markers now."""
    text = readme.read_text()
    return text[text.index(BEGIN) + len(BEGIN):text.index(END)].lstrip("\n")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("results", nargs="?", type=Path, help="a results file (default: the newest)")
    p.add_argument("--write-readme", action="store_true",
                   help="rewrite README's section from the newest results file")
    a = p.parse_args()
    if a.write_readme:
        print("README updated" if write_readme() else "README already up to date")
        return
    path = a.results or newest()
    if path is None:
        raise SystemExit("no results file: run benchmarks/run_all.py first")
    print(render(json.loads(path.read_text()), path.name, images=str(path.with_suffix(""))))


if __name__ == "__main__":
    main()
