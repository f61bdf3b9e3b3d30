"""Helpers of the store tests: real file-system failures (a small tmpfs, filled to make a
full disk or mounted read-only — root is not stopped by chmod, a read-only mount stops
everyone), the heart example as a small run config, the CLI in process, headless Chromium."""

from __future__ import annotations

import errno
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from fedsilo.config.schema import RunConfig, load_config
from fedsilo.engine.events import RoundEvent
from tests.conftest import EXAMPLES

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
DRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
SHOTS = Path(__file__).resolve().parents[2] / "results" / "screenshots"
needs_chromium = pytest.mark.skipif(
    not (Path(CHROMIUM).exists() and Path(DRIVER).exists()),
    reason="Debian's chromium and chromium-driver are not installed (scripts/setup-tests.sh "
           "installs them where apt-get is available)")


def wait_for(predicate: Callable[[], Any], timeout: float = 120.0) -> Any:
    """`predicate()` once it is true (a hang guard of minutes, never a time budget)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError("condition not met within the time limit")


def cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
        *args: str) -> tuple[int, str]:
    """`fedsilo ARGS` in process: its exit code and output (one line per message: wide)."""
    from fedsilo.cli.main import main

    monkeypatch.setenv("COLUMNS", "2000")
    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out + out.err


@contextmanager
def tmpfs(path: Path, size: str = "4m", read_only: bool = False) -> Iterator[Path]:
    """A tmpfs of `size` mounted at `path` (skips the test where mounting is not allowed)."""
    path.mkdir(parents=True, exist_ok=True)
    if shutil.which("mount") is None:
        pytest.skip("no mount command here")
    options = f"size={size}" + (",ro" if read_only else "")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root with CAP_SYS_ADMIN): "
                    f"{done.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def fill(folder: Path) -> Path:
    """Write a file in `folder` until its file system has no space left; the file."""
    filler = folder / "filler"
    chunk = b"\0" * 65536
    with open(filler, "wb", buffering=0) as f:
        for size in (65536, 4096, 1):
            try:
                while True:
                    f.write(chunk[:size])
            except OSError as e:
                assert e.errno == errno.ENOSPC, e
    return filler


def heart(output: Path, rounds: int = 3, store_url: str | None = None,
          **run: Any) -> RunConfig:
    """The heart example: `rounds` rounds, no comparison, results in `output`."""
    cfg = load_config(EXAMPLES / "heart_disease" / "heart_disease.toml")
    update = {"rounds": rounds, "output_dir": str(output), "compare": False, **run}
    cfg = cfg.model_copy(update={"run": cfg.run.model_copy(update=update)})
    if store_url is not None:
        cfg = cfg.model_copy(update={"store": cfg.store.model_copy(update={"url": store_url})})
    return cfg


def at_rounds(actions: dict[int, Callable[[], None]]
              ) -> Callable[[str, int], Callable[[RoundEvent], None] | None]:
    """A `phase` for run_simulation: during the federated phase, after round r is recorded
    (the recorder listens first), run actions[r]."""
    def listener(event: RoundEvent) -> None:
        if event.round in actions:
            actions[event.round]()

    return lambda name, rounds: listener if name == "federated" else None


def event(rnd: int, evaluation: dict[str, dict[str, float]],
          federated: dict[str, float] | None = None,
          metrics: dict[str, Any] | None = None) -> RoundEvent:
    """A round where every evaluated institution took part (digests of zeros)."""
    names = tuple(sorted(evaluation))
    return RoundEvent(rnd, rnd, names, {}, metrics or {}, evaluation, federated or {}, 0.1,
                      {n: "0" * 64 for n in names}, "1" * 64)


def signed_by_kits(ev: RoundEvent, run_id: str, kits: Path) -> RoundEvent:
    """`ev` with each participant's signature of its update digest, made with the key of
    its startup kit under `kits` (what a deployed institution sends)."""
    import dataclasses

    from fedsilo.aggregation.secure.identity import Credentials, contribution_message, kit_keys
    from fedsilo.core.messages import Signed

    signed = {}
    for name in ev.participants:
        credentials = Credentials.from_keys(kit_keys(kits / name))
        assert credentials is not None
        signer = credentials.signer_for(name)
        message = contribution_message(run_id, ev.round, name, ev.digests[name])
        signed[name] = Signed(signer.sign(message).hex(), signer.certificate, ev.round)
    return dataclasses.replace(ev, signed=signed)
