"""Goal 2 (../shared/PERFORMANCE.md): one round with 4 institutions over mutual TLS on
loopback, for a dummy model of N float32 parameters, next to the ceiling: the time a raw gRPC
stream needs to move the same bytes (each institution downloads and uploads N·4 bytes, all
four at once).

fedsilo's round is the real thing: the server's sync loop (configure, dispatch, accept with
validation, streaming aggregation, commit), 4 institution processes with a real Client whose
training returns the model unchanged.

    python benchmarks/deployment_round.py [--sizes 1000000 10000000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from fedsilo.algorithms.fedavg import fedavg
from fedsilo.engine.sync_runner import RunSettings, run_sync
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
        history = run_sync(fedavg({"epochs": 1}), transport, {"w": np.zeros(n, np.float32)},
                           RunSettings("bench", 0, rounds, evaluate_every=10**9,
                                       round_timeout=600))
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


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 10_000_000])
    p.add_argument("--rounds", type=int, default=6)
    a = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        kits = Path(tmp) / "kits"
        provision(Project("bench", "localhost", NAMES), kits)
        print("4 institutions, mutual TLS on loopback; median of rounds 1..R-1")
        for n in a.sizes:
            ours = statistics.median(fedsilo_rounds(kits, n, a.rounds))
            time.sleep(0.5)
            ceiling = statistics.median(raw_rounds(kits, n, a.rounds))
            print(f"N={n:>11,} float32 ({n * 4 / 2**20:6.1f} MiB): fedsilo round "
                  f"{ours * 1e3:8.1f} ms | raw gRPC stream, same bytes {ceiling * 1e3:8.1f} ms"
                  f" | ratio {ours / ceiling:.2f}x")


if __name__ == "__main__":
    main()
