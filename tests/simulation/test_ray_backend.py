"""[simulation] backend = "ray" on a real two-node Ray cluster started on 127.0.0.1 (a head
and a second node as separate processes, one CPU each): the same run as in process, bit for
bit; one ray.put per model; an actor killed mid-round is replaced (its task run again, or
dropped); tasks on both nodes; without Ray, and what Ray cannot run, a config error."""

from __future__ import annotations

import dataclasses
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fedsilo.client.factory import ModelCache
from fedsilo.client.institution import Institution
from fedsilo.config.build import build_clock, build_schema
from fedsilo.config.schema import RunConfig, load_config
from fedsilo.core.messages import Task, TaskKind
from fedsilo.session import SessionResult, run_session
from fedsilo.simulation.institutions import load_tables
from fedsilo.simulation.run import run_simulation
from fedsilo.transport.inprocess import InProcessTransport
from tests.conftest import EXAMPLES, example_module

ray = pytest.importorskip("ray", reason="the Ray backend needs ray: pip install 'fedsilo[ray]'")
from fedsilo.simulation.ray_backend import RayTransport, Source  # noqa: E402

HEART = EXAMPLES / "heart_disease" / "heart_disease.toml"
HANG = 600  # seconds: a hang guard only, never a timing assertion
RAY_ENV = {**os.environ, "RAY_DEDUP_LOGS": "0", "RAY_USAGE_STATS_ENABLED": "0",
           "RAY_AUTH_MODE": "disabled"}  # a cluster of this test's own, on loopback


def heart(rounds: int = 3, **simulation: Any) -> RunConfig:
    """The heart disease example (4 hospitals, FedAvg), short, on the given backend."""
    cfg = load_config(HEART)
    return cfg.model_copy(update={
        "run": cfg.run.model_copy(update={"rounds": rounds, "compare": False}),
        "client": cfg.client.model_copy(update={"steps": 20}),
        "simulation": cfg.simulation.model_copy(update=simulation)})


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ray_node(log: Path, *args: str) -> subprocess.Popen[bytes]:
    """`ray start --block ...` in a session of its own (stopped with its process group),
    its output in `log`."""
    with log.open("wb") as out:
        return subprocess.Popen([str(Path(sys.executable).with_name("ray")), "start",
                                 "--block", "--node-ip-address=127.0.0.1", "--num-cpus=1",
                                 "--object-store-memory=80000000", "--disable-usage-stats",
                                 *args],
                                env=RAY_ENV, start_new_session=True, stdout=out,
                                stderr=subprocess.STDOUT)


def _wait_started(node: subprocess.Popen[bytes], log: Path) -> None:
    """Until `ray start` says the node is up (it has joined the cluster)."""
    guard = time.monotonic() + HANG  # a hang guard only
    while b"Ray runtime started" not in log.read_bytes():
        assert node.poll() is None, log.read_text(errors="replace")[-3000:]
        assert time.monotonic() < guard, "ray start never finished"
        time.sleep(0.2)


def _stop(node: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the node's process group (raylet, GCS, workers); SIGKILL if it lingers."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(node.pid, sig)
            node.wait(5)
            return
        except ProcessLookupError:
            return
        except subprocess.TimeoutExpired:
            continue


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real two-node Ray cluster on 127.0.0.1: a head and a second node as separate
    processes, one CPU and a resource of their own each (node_a, node_b); its address."""
    saved = {k: os.environ.get(k) for k in RAY_ENV if k.startswith("RAY_")}
    os.environ.update({k: v for k, v in RAY_ENV.items() if k.startswith("RAY_")})
    logs = tmp_path_factory.mktemp("ray")
    port = _free_port()
    nodes = [_ray_node(logs / "head.log", "--head", f"--port={port}",
                       '--resources={"node_a": 1}', f"--temp-dir=/tmp/fsray{port}",
                       "--include-dashboard=false", f"--ray-client-server-port={_free_port()}")]
    try:
        _wait_started(nodes[0], logs / "head.log")
        nodes.append(_ray_node(logs / "node_b.log", f"--address=127.0.0.1:{port}",
                               '--resources={"node_b": 1}'))
        _wait_started(nodes[1], logs / "node_b.log")
        yield f"127.0.0.1:{port}"
    finally:
        for node in nodes:
            _stop(node)
        shutil.rmtree(f"/tmp/fsray{port}", ignore_errors=True)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture
def connected(cluster: str) -> Iterator[str]:
    """This process joined to the cluster (for the tests' own actors); the address."""
    ray.init(address=cluster, logging_level="WARNING")
    try:
        yield cluster
    finally:
        ray.shutdown()


def in_process(cfg: RunConfig) -> SessionResult:
    tables = load_tables(cfg)
    models = ModelCache()
    transport = InProcessTransport({n: Institution(n, t, models)
                                    for n, t in sorted(tables.items())})
    return run_session(cfg, transport, build_schema(cfg, next(iter(tables.values()))), "r",
                       clock=build_clock(cfg, "virtual"))


def on_ray(cfg: RunConfig, hook: Any = None) -> tuple[SessionResult, RayTransport]:
    pool = RayTransport(Source(cfg), cfg.simulation, hook)
    try:
        pool.open({})
        return run_session(cfg, pool, pool.schema, "r", clock=build_clock(cfg, "virtual")), pool
    finally:
        pool.close()


def events(rounds: list[dict]) -> list[dict]:
    """Round events without their wall-clock `seconds` (how long the round took here)."""
    return [{k: v for k, v in e.items() if k != "seconds"} for e in rounds]


def same_run(a: SessionResult, b: SessionResult) -> None:
    assert events([dataclasses.asdict(e) for e in a.history.events]) == \
           events([dataclasses.asdict(e) for e in b.history.events])
    assert a.history.params.keys() == b.history.params.keys()
    for k in a.history.params:
        assert np.array_equal(a.history.params[k], b.history.params[k]), k


def fedbuff(cfg: RunConfig) -> RunConfig:
    """Asynchronous FedBuff under the virtual clock (uneven speeds): the driver's other path,
    each fit reply timed by the clock as soon as it is in."""
    return RunConfig.model_validate({
        **cfg.model_dump(), "run": {**cfg.run.model_dump(), "mode": "async"},
        "strategy": {"name": "fedbuff", "buffer_size": 2},
        "clock": {"kind": "virtual", "speeds": {"cleveland": 3.0, "hungary": 0.5}}})


@pytest.mark.parametrize("variant", [None, fedbuff], ids=["fedavg", "fedbuff-async"])
def test_run_simulation_on_ray_equals_in_process_bit_for_bit(cluster: str,
                                                             variant: Any) -> None:
    cfg = heart(rounds=2, backend="ray", address=cluster)  # one actor per node
    cfg = variant(cfg) if variant is not None else cfg
    ours = run_simulation(cfg, write=False)
    theirs = run_simulation(cfg.model_copy(update={"simulation": cfg.simulation.model_copy(
        update={"backend": "inprocess"})}), write=False)
    # every event: participants, rejections, metrics, evaluation, digests
    assert events(ours.rounds) == events(theirs.rounds)
    for k in ours.history.params:
        assert np.array_equal(ours.history.params[k], theirs.history.params[k]), k


class Gate:
    """Holds a chosen task until the test has killed the actor running it."""

    def __init__(self) -> None:
        import asyncio

        self.fired = False
        self.started = asyncio.Event()
        self.actor: Any = None

    def first(self) -> bool:
        fired, self.fired = self.fired, True
        return not fired

    async def arrive(self, actor: Any) -> None:
        self.actor = [actor]
        self.started.set()

    async def wait(self) -> Any:
        await self.started.wait()
        return self.actor[0]

    async def hold(self) -> None:
        import asyncio

        await asyncio.Event().wait()  # until the actor holding it is killed


def kill_when(cfg: RunConfig, institution: str, round: int) -> tuple[SessionResult, RayTransport]:
    """Run on Ray; when `institution`'s fit task of `round` starts (the first time), the
    actor running it is killed by this process (`ray.kill`) while it holds the task."""
    gate = ray.remote(num_cpus=0)(Gate).remote()

    def hook(task: Task) -> None:
        import ray as r

        if (task.client_id == institution and task.kind is TaskKind.FIT
                and task.round == round and r.get(gate.first.remote())):
            r.get(gate.arrive.remote(r.get_runtime_context().current_actor))
            r.get(gate.hold.remote())

    def killer() -> None:
        ray.kill(ray.get(gate.wait.remote(), timeout=HANG), no_restart=True)

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    try:
        return on_ray(cfg, hook)
    finally:
        thread.join(HANG)
        ray.kill(gate)


def test_an_actor_killed_mid_round_is_replaced_and_its_task_runs_again(
        connected: str) -> None:
    cfg = heart(rounds=2, backend="ray", retries=1)
    session, pool = kill_when(cfg, "hungary", 1)
    assert pool.restarts == 1
    assert len(session.history.events) == 2
    assert "hungary" in session.history.events[0].participants
    same_run(session, in_process(cfg))  # FedAvg keeps nothing between rounds: the same run
    assert sum(pool.tasks_on.values()) == 4 + 2 * 8  # prepare, 4 fit + 4 evaluate per round
    # one ray.put per model (the initial one, then each round's: evaluated, then trained on
    # in the next round) and one of the run setup, the actor's death notwithstanding; the
    # prepare tasks' empty ones travel inline
    assert pool.puts == [("params", "fit", 1), ("setup", "fit", 1), ("params", "evaluate", 1),
                         ("params", "evaluate", 2)]


def test_an_actor_killed_mid_round_without_retries_drops_its_task(connected: str) -> None:
    cfg = heart(rounds=2, backend="ray", retries=0)
    session, pool = kill_when(cfg, "hungary", 1)
    assert pool.restarts == 1
    events = session.history.events
    assert len(events) == 2  # the run goes on
    # the dead actor's tasks (hungary's, and the one queued behind it) are dropped; the
    # round commits with the institutions of the other actor
    dead = {n for n, slot in pool.slot.items() if slot == pool.slot["hungary"]}
    assert dead == {"hungary", "va-long-beach"}
    assert set(events[0].participants) == set(pool.names) - dead
    assert set(events[1].participants) == set(pool.names)  # rebuilt on the new actor


@pytest.mark.integration
def test_tasks_run_on_both_nodes_of_the_cluster(connected: str) -> None:
    """One actor per node (each node has one CPU, each actor takes one): every node's
    actor answers tasks."""
    named = {n["NodeID"]: sorted(k for k in n["Resources"] if k.startswith("node_"))
             for n in ray.nodes() if n["Alive"]}
    assert sorted(named.values()) == [["node_a"], ["node_b"]]
    cfg = heart(rounds=2, backend="ray", resources={"num_cpus": 1})
    session, pool = on_ray(cfg)
    assert len(session.history.events) == 2
    assert sorted(pool.actor_nodes) == sorted(named)
    assert sorted(pool.tasks_on) == sorted(named)  # tasks ran on both nodes


def _config_file(tmp_path: Path, extra: str) -> Path:
    """heart_disease.toml with absolute data paths and `extra` appended."""
    text = HEART.read_text().replace('path = "data/', f'path = "{HEART.parent}/data/')
    path = tmp_path / "run.toml"
    path.write_text(text.replace("rounds = 15", "rounds = 1") + "\n" + extra)
    return path


def _cli(path: Path, *, without_ray: bool = False) -> subprocess.CompletedProcess[str]:
    hide = "sys.modules['ray'] = None; " if without_ray else ""
    code = (f"import sys; {hide}from fedsilo.cli.main import main; "
            f"sys.exit(main(['run', '--quiet', {str(path)!r}, '--output', "
            f"{str(path.parent / 'out')!r}]))")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=HANG, env={**RAY_ENV, "COLUMNS": "400"})


def test_without_ray_the_backend_is_a_config_error(tmp_path: Path) -> None:
    done = _cli(_config_file(tmp_path, '[simulation]\nbackend = "ray"\n'), without_ray=True)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "pip install 'fedsilo[ray]'" in done.stdout


@pytest.mark.parametrize("extra, named", [
    ('[aggregation]\nsecure = "secagg+"\nthreshold = 3\n', "aggregation.secure"),
    ("[attack]\nfraction = 0.25\n", "attack.fraction"),
])
def test_what_ray_cannot_run_is_refused(tmp_path: Path, extra: str, named: str) -> None:
    done = _cli(_config_file(tmp_path, extra + '[simulation]\nbackend = "ray"\n'))
    assert done.returncode == 2, done.stdout + done.stderr
    assert named in done.stdout and "backend = 'inprocess'" in done.stdout


RUNS_ON_RAY = sorted(p for p in EXAMPLES.glob("*/*.toml") if p.name != "project.toml")


@pytest.mark.parametrize("path", RUNS_ON_RAY, ids=lambda p: p.stem)
def test_every_example_runs_on_ray_as_in_process_or_is_refused_with_the_reason(
        cluster: str, path: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Each example config, one round: on Ray the same round events and model as in process
    (bit for bit), or a config error that names what Ray cannot run and the way out."""
    if path.parent.name == "tcga_brca":
        pytest.skip("tcga_brca reads FLamby's files from TCGA_BRCA_DIR, which this cluster's "
                    "nodes are not given (not shipped; tests/examples runs it in process)")
    monkeypatch.syspath_prepend(str(path.parent))  # its modules, as load_config finds them
    cfg = load_config(path)
    given = cfg.model_dump(exclude_unset=True)  # as written: defaults stay defaults
    if path.parent.name == "digits_images":  # its images are made by its prepare_data.py
        example_module(path.parent, "prepare_data").write_sites(tmp_path / "data")
        for source in given["data"]["institutions"]:
            source["path"] = str(tmp_path / source["path"])
    short = {**given, "run": {**given.get("run", {}), "rounds": 1, "compare": False}}
    try:
        on_ray = RunConfig.model_validate({**short, "simulation": {
            "backend": "ray", "address": cluster}})
    except ValueError as e:  # pydantic's ValidationError is one
        assert cfg.model.kind == "xgboost" or cfg.run.mode == "vertical", str(e)
        assert "cannot run on it" in str(e) and "backend = 'inprocess'" in str(e)
        return
    same_run(run_simulation(on_ray, write=False),
             run_simulation(RunConfig.model_validate(short), write=False))
