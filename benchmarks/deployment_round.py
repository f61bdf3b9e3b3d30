"""Goal 2 (../shared/PERFORMANCE.md): one round with 4 institutions over mutual TLS on
loopback, for a dummy model of N float32 parameters, next to the ceiling: the time a raw gRPC
stream needs to move the same bytes (each institution downloads and uploads N·4 bytes, all
four at once).

fedsilo's round is the real thing: the server's sync loop (configure, dispatch, accept with
validation, streaming aggregation, commit), 4 institution processes with a real Client whose
training returns the model unchanged.

Flower's deployment runtime (1 SuperLink + 4 SuperNodes, `flwr run` of benchmarks/flower_app)
runs the same dummy round in the same run when `.venv-flower` exists (see
benchmarks/setup-peers.sh for how to make it).

NVIDIA FLARE 2.9's POC deployment (`nvflare poc prepare -n 4` + `poc start` through the recipe
API's `PocEnv`: provisioned, 1 server + 4 clients on loopback, mutual TLS over its HTTP
driver) runs the same echo round in the same run when `.venv-nvflare` exists
(benchmarks/_nvflare_round.py).

One invocation measures the whole table: for each of `--repeats` repetitions, every size is
run by every system in turn (interleaved, so a slow spell of the machine hits all of them);
each run gives the median of its rounds 1..R-1; the table gives the median (and range) of
those over the repetitions, and each ratio is the median of the repetitions' ratios.

    python benchmarks/deployment_round.py [--sizes 1000 1000000 10000000] [--rounds 6]
        [--repeats 3] [--skip-flower] [--skip-nvflare] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from fedsilo.algorithms.fedavg import fedavg
from fedsilo.engine.clock import WallClock
from fedsilo.engine.drivers import train
from fedsilo.engine.flow import RunSettings
from fedsilo.transport.grpc.provision import Project, provision
from fedsilo.transport.grpc.server import GrpcServerTransport
from fedsilo.transport.grpc.tls import Gatekeeper, server_credentials

HERE = Path(__file__).resolve().parent
NAMES = ("a", "b", "c", "d")


def fedsilo_rounds(kits: Path, n: int, rounds: int) -> list[float]:
    transport = GrpcServerTransport("127.0.0.1:0", Gatekeeper.from_kit(kits / "server"),
                                    server_credentials(kits / "server"))
    procs = [subprocess.Popen([sys.executable, str(HERE / "_echo_institution.py"),
                               f"localhost:{transport.port}", str(kits / name), name])
             for name in NAMES]
    try:
        transport.wait_for_clients(4, 60)
        history = train(fedavg({"epochs": 1}), transport, {"w": np.zeros(n, np.float32)},
                           RunSettings("bench", 0, rounds, evaluate_every=10**9,
                                       round_timeout=600), WallClock())
        # the last round also evaluates (one more broadcast): leave it out
        return [e.seconds for e in history.events[:-1]]
    finally:
        transport.close(0.5)
        for p in procs:
            p.wait(30)


def raw_rounds(kits: Path, n: int, rounds: int) -> list[float]:
    sys.path.insert(0, str(HERE))
    from _raw_stream import serve

    server = serve(str(kits / "server"), n * 4)
    port = server.add_secure_port("127.0.0.1:0", server_credentials(kits / "server"))
    server.start()
    try:
        procs = [subprocess.Popen([sys.executable, str(HERE / "_raw_stream.py"),
                                   f"localhost:{port}", str(kits / name), str(n * 4),
                                   str(rounds)], stdout=subprocess.PIPE, text=True)
                 for name in NAMES]
        outs = [[float(x) for x in p.communicate()[0].split()] for p in procs]
    finally:
        server.stop(0)
    return [max(times) for times in zip(*outs)]  # a round ends when the slowest is done


def flower_rounds(n: int, rounds: int, bindir: Path, tmp: Path) -> list[float]:
    """Flower 1.42 deployment: 1 SuperLink + 4 SuperNodes (insecure: Flower's TLS setup is
    separate, and TLS costs nothing measurable on loopback), `flwr run` of flower_app/."""
    home = tmp / "flwr_home"
    home.mkdir(exist_ok=True)
    (home / "config.toml").write_text('[superlink]\ndefault = "bench"\n\n[superlink.bench]\n'
                                      'address = "127.0.0.1:8000"\ninsecure = true\n')
    # Flower 1.42 serves its APIs over HTTP on :8000 and starts flower-superexec from PATH
    env = {**os.environ, "FLWR_HOME": str(home),
           "PATH": f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}"}
    out = tmp / f"flower_{n}.txt"
    procs = [subprocess.Popen([str(bindir / "flower-superlink"), "--insecure",
                               "--disable-runtime-dependency-installation"], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    time.sleep(3)
    procs += [subprocess.Popen([str(bindir / "flower-supernode"), "--insecure", "--superlink",
                                "127.0.0.1:8000", "--port", str(9100 + i), "--node-config",
                                f"partition-id={i} num-partitions=4"], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
              for i in range(4)]
    try:
        time.sleep(5)
        subprocess.run([str(bindir / "flwr"), "run", str(HERE / "flower_app"), "bench",
                        "--run-config", f'num-params={n} rounds={rounds} out="{out}"',
                        "--stream"], env=env, timeout=900, capture_output=True, check=True)
        return [float(x) for x in out.read_text().split()]
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(30)


def nvflare_rounds(n: int, rounds: int, python: Path) -> list[float]:
    """NVFlare 2.9 POC: a fresh provisioned project, server + 4 clients, one FedAvg job of
    `rounds` echo rounds (benchmarks/_nvflare_round.py); each round's seconds."""
    proc = subprocess.run([str(python), str(HERE / "_nvflare_round.py"), str(n), str(rounds)],
                          cwd=HERE, env={**os.environ, "PYTHONPATH": str(HERE)},
                          capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        raise SystemExit(f"NVFlare's POC round failed ({proc.returncode}):\n"
                         f"{(proc.stderr or proc.stdout)[-3000:]}")
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith('{"engine"')][-1]
    return [float(x) for x in json.loads(line)["round_s"]]


def _ms(values: list[float]) -> str:
    """'median (min–max)' in ms, or the one value."""
    med = statistics.median(values) * 1e3
    if len(values) == 1:
        return f"{med:.1f} ms"
    return f"{med:.1f} ms ({min(values) * 1e3:.1f}–{max(values) * 1e3:.1f})"


def summary(n: int, runs: dict[str, list[float]]) -> dict[str, Any]:
    """One table row: medians over repetitions, ratios as medians of per-repetition ratios."""
    row: dict[str, Any] = {"n": n, "mib": n * 4 / 2**20, "repeats": len(runs["fedsilo"])}
    for system, values in runs.items():
        row[f"{system}_round_ms"] = statistics.median(values) * 1e3
        row[f"{system}_min_ms"], row[f"{system}_max_ms"] = min(values) * 1e3, max(values) * 1e3
    row["fedsilo_vs_raw"] = statistics.median(f / r for f, r in zip(runs["fedsilo"], runs["raw"]))
    for peer in ("flower", "nvflare"):
        if peer in runs:
            row[f"{peer}_vs_fedsilo"] = statistics.median(
                w / f for w, f in zip(runs[peer], runs["fedsilo"]))
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[1_000, 1_000_000, 10_000_000])
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--repeats", type=int, default=3, help="repetitions of the whole table")
    p.add_argument("--flower-bin", type=Path, default=HERE.parent / ".venv-flower" / "bin",
                   help="bin folder of a venv with flwr 1.42 (skipped when absent)")
    p.add_argument("--skip-flower", action="store_true")
    p.add_argument("--nvflare-python", type=Path,
                   default=HERE.parent / ".venv-nvflare" / "bin" / "python",
                   help="python of a venv with nvflare 2.9.0 (skipped when absent)")
    p.add_argument("--skip-nvflare", action="store_true")
    p.add_argument("--json", type=Path, help="also write the records to this file")
    a = p.parse_args()
    with_flower = not a.skip_flower and (a.flower_bin / "flwr").exists()
    with_nvflare = not a.skip_nvflare and a.nvflare_python.exists()
    skipped = [] if with_flower else [f"flower: --skip-flower or no flwr in {a.flower_bin}"]
    if not with_nvflare:
        skipped.append(f"nvflare: --skip-nvflare or no {a.nvflare_python} "
                       "(bash benchmarks/setup-peers.sh makes it)")
    peers = (("flower",) if with_flower else ()) + (("nvflare",) if with_nvflare else ())
    runs: dict[int, dict[str, list[float]]] = {
        n: {s: [] for s in ("fedsilo", "raw") + peers} for n in a.sizes}
    with tempfile.TemporaryDirectory() as tmp:
        kits = Path(tmp) / "kits"
        provision(Project("bench", "localhost", NAMES), kits)
        print(f"4 institutions, mutual TLS on loopback; each run: median of rounds 1..R-1 "
              f"of {a.rounds}; {a.repeats} repetitions, interleaved")
        for rep in range(a.repeats):
            for n in a.sizes:
                got = runs[n]
                got["fedsilo"].append(statistics.median(fedsilo_rounds(kits, n, a.rounds)))
                time.sleep(0.5)
                got["raw"].append(statistics.median(raw_rounds(kits, n, a.rounds)))
                line = (f"  repetition {rep + 1}, N={n:>11,}: fedsilo "
                        f"{got['fedsilo'][-1] * 1e3:8.1f} ms | raw gRPC "
                        f"{got['raw'][-1] * 1e3:8.1f} ms")
                if with_flower:
                    got["flower"].append(statistics.median(
                        flower_rounds(n, a.rounds, a.flower_bin, Path(tmp))))
                    line += f" | Flower {got['flower'][-1] * 1e3:8.1f} ms"
                if with_nvflare:
                    got["nvflare"].append(statistics.median(
                        nvflare_rounds(n, a.rounds, a.nvflare_python)[1:]))
                    line += f" | NVFlare {got['nvflare'][-1] * 1e3:8.1f} ms"
                print(line, flush=True)
    rows = [summary(n, runs[n]) for n in a.sizes]
    names = {"flower": "Flower 1.42", "nvflare": "NVFlare 2.9 POC"}
    print("\n| model | fedsilo round | raw gRPC stream | fedsilo / raw |"
          + "".join(f" {names[q]} | {names[q].split()[0]} / fedsilo |" for q in peers))
    print("|---|---|---|---|" + "---|---|" * len(peers))
    for n, row in zip(a.sizes, rows):
        line = (f"| {n:,} float32 ({row['mib']:.3g} MiB) | {_ms(runs[n]['fedsilo'])} | "
                f"{_ms(runs[n]['raw'])} | {row['fedsilo_vs_raw']:.2f}x |")
        for q in peers:
            line += f" {_ms(runs[n][q])} | {row[f'{q}_vs_fedsilo']:.1f}x |"
        print(line)
    for line in skipped:
        print("skipped", line)
    if a.json:
        a.json.write_text(json.dumps({"records": rows, "skipped": skipped}, indent=1))


if __name__ == "__main__":
    main()
