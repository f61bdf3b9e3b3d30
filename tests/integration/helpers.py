"""Starting real fedsilo server and institution processes on loopback for tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.conftest import EXAMPLES

FEDSILO = str(Path(sys.executable).with_name("fedsilo"))
HEART = EXAMPLES / "heart_disease"
FILES = {"cleveland": "cleveland", "hungary": "hungarian", "switzerland": "switzerland",
         "va-long-beach": "va"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def heart_config(tmp: Path, **run: object) -> Path:
    """The heart example's config with data paths made absolute and [run] overrides."""
    text = (HEART / "heart_disease.toml").read_text().replace('"data/', f'"{HEART}/data/')
    def toml(v: object) -> str:
        return str(v).lower() if isinstance(v, bool) else repr(v).replace("'", '"')

    extra = "".join(f"{k} = {toml(v)}\n" for k, v in run.items())
    text = text.replace("[run]\n", "[run]\n" + extra)
    for key in run:  # drop the original line of an overridden key
        lines = text.splitlines()
        first = next(i for i, ln in enumerate(lines) if ln.startswith(f"{key} ="))
        later = [i for i, ln in enumerate(lines) if ln.startswith(f"{key} =") and i != first]
        text = "\n".join(ln for i, ln in enumerate(lines) if i not in later) + "\n"
    path = tmp / "run.toml"
    path.write_text(text)
    return path


class Proc:
    """A child process whose output goes to a file we can read while it runs."""

    def __init__(self, args: list[str], log: Path) -> None:
        self.log = log
        self._out = open(log, "w")  # noqa: SIM115 (closed in finish/stop)
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.p = subprocess.Popen(args, stdout=self._out, stderr=subprocess.STDOUT, env=env)

    def text(self) -> str:
        return self.log.read_text()

    def wait_for(self, needle: str, timeout: float = 600) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.text()
            if needle in text:
                return text
            if self.p.poll() is not None:
                raise AssertionError(f"exited ({self.p.returncode}) before '{needle}':\n{text}")
            time.sleep(0.1)
        raise AssertionError(f"no '{needle}' within {timeout} s:\n{self.text()}")

    def finish(self, timeout: float = 600) -> int:
        try:
            return self.p.wait(timeout)
        finally:
            self._out.close()

    def kill(self, sig: int = signal.SIGKILL) -> None:
        self.p.send_signal(sig)

    def stop(self) -> None:
        if self.p.poll() is None:
            self.p.kill()
            self.p.wait(10)
        self._out.close()


def server(kits: Path, config: Path, port: int, out: Path, *extra: str) -> Proc:
    return Proc([FEDSILO, "server", "--kit", str(kits / "server"), "--config", str(config),
                 "--address", f"127.0.0.1:{port}", "--output", str(out / "results"), *extra],
                out / "server.log")


def institution(kits: Path, name: str, port: int, out: Path, *extra: str) -> Proc:
    data = HEART / "data" / f"processed.{FILES[name]}.data"
    return Proc([FEDSILO, "client", "--kit", str(kits / name), "--data", str(data),
                 "--address", f"127.0.0.1:{port}", *extra], out / f"{name}.log")


@contextmanager
def federation(kits: Path, tmp: Path, names: list[str], **run: object
               ) -> Iterator[tuple[Proc, dict[str, Proc], int]]:
    """A server (the heart config with `run` overrides) and one process per institution on a
    free loopback port; every process is stopped on exit."""
    port = free_port()
    srv = server(kits, heart_config(tmp, **run), port, tmp)
    clients = {n: institution(kits, n, port, tmp) for n in names}
    try:
        yield srv, clients, port
    finally:
        for p in (srv, *clients.values()):
            p.stop()


def run_to_end(srv: Proc, clients: list[Proc]) -> str:
    """Wait for the server and every institution to exit 0 (hang guards of minutes), stop
    whatever is left either way, and return the server's log."""
    try:
        assert srv.finish(900) == 0, srv.text()
        assert all(c.finish(300) == 0 for c in clients)
    finally:
        for p in (srv, *clients):
            p.stop()
    return srv.text()
