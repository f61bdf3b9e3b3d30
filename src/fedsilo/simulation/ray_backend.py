"""A simulation's institutions on a pool of Ray actors ([simulation] backend = "ray").

The server's run is the same as in process (`session.run_session` over the same round flow,
driven by `engine/drivers.py: drive_virtual`); only where institutions run differs:

- each actor (`Host`) hosts a fixed share of the institutions (sorted names, round robin)
  and builds each one lazily, from the run config and its name, on its first task: its rows
  are read there (a file, the user's loader, or the partition of one CSV), never sent by the
  server; tables given in Python travel once each through the object store;
- a model travels through the object store once (one `ray.put` per distinct parameter
  set: the initial model, then each round's new model, which that round's evaluation and
  the next round's training share), and so does the run setup; tasks carry references;
- `start` submits an outbox's tasks at once (at most two per actor in flight), `call` hands
  back their replies in the order sent, each fetched as soon as it and those before it are
  done: the server folds them one by one (memory O(model) on the server), the same sum in
  the same order as in process, so the same seed gives the same run bit for bit;
- an actor that dies is replaced; the tasks it held run again there up to `retries` times,
  then are lost (`TaskLost`: the round counts them as dropped).

Ray is imported here only, and only when a run asks for it.
"""

from __future__ import annotations

import dataclasses
import logging
import sys
from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from fedsilo.client.factory import ModelCache
from fedsilo.client.institution import Institution
from fedsilo.config.build import build_schema
from fedsilo.config.schema import RunConfig, SimulationSection
from fedsilo.core.messages import Rejection, Reply, Task
from fedsilo.data.checks import check_table
from fedsilo.data.prepare import Table
from fedsilo.data.schema import Schema
from fedsilo.errors import ConfigError, TaskLost, UnknownClient
from fedsilo.simulation.institutions import load_table, load_tables

log = logging.getLogger(__name__)
TaskHook = Callable[[Task], None]
ACTOR_OPTIONS = ("num_cpus", "num_gpus", "memory")  # other resources are custom ones


def require_ray() -> ModuleType:
    """The `ray` module, or a ConfigError saying how to install it."""
    try:
        import ray
    except ImportError:
        raise ConfigError("simulation.backend = 'ray' needs Ray: pip install 'fedsilo[ray]'"
                          ) from None
    return ray


@dataclass(frozen=True)
class Source:
    """Where a host finds an institution's rows: the run config, or (tables given in Python)
    an object-store reference per institution."""

    cfg: RunConfig
    tables: Mapping[str, Any] | None = None  # name -> ObjectRef of its table

    def names(self) -> list[str] | None:
        """The institutions, where known without reading data."""
        if self.tables is not None:
            return sorted(self.tables)
        declared = [i.name for i in self.cfg.data.institutions]
        return sorted(declared) if declared else None

    def first(self) -> str | None:
        """The institution whose table the schema is read from (the first given)."""
        if self.tables is not None:
            return next(iter(self.tables))
        declared = self.cfg.data.institutions
        return declared[0].name if declared else None


class Host:
    """One actor: builds its institutions on their first task and answers their tasks."""

    def __init__(self, source: Source, hook: TaskHook | None = None) -> None:
        path = str(Path(source.cfg.base_dir).resolve())  # the config's own code (factories)
        if path not in sys.path:
            sys.path.insert(0, path)
        import torch

        torch.set_num_threads(source.cfg.run.torch_threads)
        self._source, self._hook = source, hook
        self._schema: Schema | None = None
        self._keys: dict[str, Mapping[str, bytes]] = {}
        self._institutions: dict[str, Institution] = {}
        self._partition: dict[str, Table] | None = None  # a partitioned CSV: this host's parts
        self._models = ModelCache()

    def survey(self) -> tuple[list[str], Schema]:
        """The institutions' names and the data schema, read from the first table as in
        process (`run_simulation`)."""
        names = self._source.names()
        if names is None:
            names = list(self._tables(None))
        sample = self._read(self._source.first() or next(iter(self._tables(None))))
        return sorted(names), build_schema(self._source.cfg, sample)

    def assign(self, schema: Schema, keys: Mapping[str, Mapping[str, bytes]]) -> str:
        """Host the institutions of `keys` (each with its key material); the node id."""
        import ray

        self._schema, self._keys = schema, dict(keys)
        if self._partition is not None:
            self._partition = {n: t for n, t in self._partition.items() if n in self._keys}
        return str(ray.get_runtime_context().get_node_id())

    def handle(self, task: Task, params: Any, setup: Any) -> tuple[Reply, str]:
        """Answer `task` (its model and setup passed apart, from the object store) and name
        the node it ran on."""
        import ray

        if self._hook is not None:
            self._hook(task)
        task = dataclasses.replace(task, params=params, setup=setup)
        if task.client_id not in self._keys:
            raise UnknownClient(f"no institution named '{task.client_id}' on this host")
        if task.client_id not in self._institutions:
            name = task.client_id
            self._institutions[name] = Institution(name, lambda read: self._checked(name),
                                                   self._models, keys=self._keys[name])
        reply = self._institutions[task.client_id].handle(task)
        return reply, str(ray.get_runtime_context().get_node_id())

    def _checked(self, name: str) -> Table:
        table = self._read(name)
        assert self._schema is not None, "assign() comes before any task"
        check_table(table, self._schema, name)  # what each institution checks, as in process
        return table

    def _read(self, name: str) -> Table:
        import ray

        if self._source.tables is not None:
            return ray.get(self._source.tables[name])  # type: ignore[no-any-return]
        if self._source.cfg.data.institutions or self._source.cfg.data.loader is not None:
            return load_table(self._source.cfg, name)
        return self._tables(name)[name]

    def _tables(self, name: str | None) -> dict[str, Table]:
        """A partitioned CSV's parts (the whole file is read to split it as in process)."""
        if self._partition is None or (name is not None and name not in self._partition):
            mine = self._keys  # empty until assigned: the survey sees every part
            self._partition = {n: t for n, t in load_tables(self._source.cfg).items()
                               if not mine or n in mine}
        return self._partition


@dataclass
class _Open:
    task: Task
    slot: int
    ref: Any = None    # the reply's ObjectRef once submitted
    actor: Any = None  # the actor it was submitted to
    tries: int = 0     # times an actor died holding it


class RayTransport:
    """A simulation transport over a pool of `Host` actors (see the module's docstring)."""

    def __init__(self, source: Source, sim: SimulationSection,
                 hook: TaskHook | None = None) -> None:
        ray = require_ray()
        self._ray = ray
        self._owns = not ray.is_initialized()
        if self._owns:
            ray.init(address=sim.address, include_dashboard=False, logging_level=logging.WARNING,
                     configure_logging=False)
        self._sim, self._source, self._hook = sim, source, hook
        self._actors: list[Any] = []
        self._keys: dict[str, Mapping[str, bytes]] = {}
        self._open: OrderedDict[str, _Open] = OrderedDict()  # started, not yet answered
        self._queue: deque[str] = deque()  # started, not yet submitted, in order
        self._flying = 0                     # submitted, not yet answered
        self._puts: OrderedDict[int, tuple[Any, Any]] = OrderedDict()  # id(obj) -> (obj, ref)
        self.puts: list[tuple[str, str, int]] = []  # ray.put calls: (what, task kind, round)
        self.restarts = 0   # actors replaced
        self.tasks_on: Counter[str] = Counter()  # node id -> tasks answered there
        self.actor_nodes: list[str] = []
        try:
            self._start_pool()
        except BaseException:
            self.close()
            raise

    def _start_pool(self) -> None:
        """The actors, sized to the cluster; the first surveys the institutions."""
        ray, sim = self._ray, self._sim
        options = {k: v for k, v in sim.resources.items() if k in ACTOR_OPTIONS}
        options.setdefault("num_cpus", 1.0)
        custom = {k: v for k, v in sim.resources.items() if k not in ACTOR_OPTIONS}
        self._actor = ray.remote(Host).options(**options, resources=custom or None,
                                               max_concurrency=1)
        self._actors.append(self._actor.remote(self._source, self._hook))
        self.names, self.schema = self._get(self._actors[0].survey.remote())
        count = sim.actors or int(ray.cluster_resources().get("CPU", 1)
                                  // max(options["num_cpus"], 1e-3))
        count = max(1, min(count, len(self.names)))
        self._actors += [self._actor.remote(self._source, self._hook) for _ in range(count - 1)]
        self.slot = {n: i % count for i, n in enumerate(self.names)}

    # -- the pool ------------------------------------------------------------------------------

    def open(self, keys: Mapping[str, Mapping[str, bytes]]) -> None:
        """Give each actor its institutions and their key material; wait until all are up."""
        self._keys = {n: dict(keys.get(n, {})) for n in self.names}
        self.actor_nodes = self._get([self._assign(i, a) for i, a in enumerate(self._actors)])

    def _assign(self, slot: int, actor: Any) -> Any:
        mine = {n: k for n, k in self._keys.items() if self.slot[n] == slot}
        return actor.assign.remote(self.schema, mine)

    def _died(self, run: _Open) -> None:
        """`run`'s actor died: a new one in its place (once), and every task the dead one
        held goes back to the queue, to run again or, past `retries`, be lost."""
        slot, dead = run.slot, run.actor
        if self._actors[slot] is dead:
            self.restarts += 1
            log.warning("Ray actor %d died: replaced, its institutions rebuilt", slot)
            self._ray.kill(dead, no_restart=True)  # if only unreachable: gone now
            self._actors[slot] = self._actor.remote(self._source, self._hook)
            self._get(self._assign(slot, self._actors[slot]))
        held = [t for t, r in self._open.items() if r.actor is dead and r.ref is not None]
        for task_id in held:
            other = self._open[task_id]
            other.ref, other.actor, other.tries = None, None, other.tries + 1
            self._flying -= 1
        self._queue.extendleft(reversed(held))

    def _fill(self) -> None:
        """Submit queued tasks in order, at most two per actor in flight."""
        while self._queue and self._flying < 2 * len(self._actors):
            run = self._open.get(self._queue.popleft())
            if run is not None and run.ref is None and run.tries <= self._sim.retries:
                self._submit(run)

    def _submit(self, run: _Open) -> None:
        task = run.task
        bare = dataclasses.replace(task, params={}, setup={})
        run.actor = self._actors[run.slot]
        run.ref = run.actor.handle.remote(
            bare, self._put(task.params, ("params", task.kind.value, task.round)),
            self._put(task.setup, ("setup", task.kind.value, task.round)))
        self._flying += 1

    def _put(self, obj: Any, what: tuple[str, str, int]) -> Any:
        """One object-store copy per distinct object (a round's model, the run setup); an
        empty one travels with the task."""
        if not obj:
            return obj
        key = id(obj)
        if key not in self._puts:
            self._puts[key] = (obj, self._ray.put(obj))
            self.puts.append(what)
            while len(self._puts) > 4:
                self._puts.popitem(last=False)
        return self._puts[key][1]

    def _get(self, ref: Any) -> Any:
        """ray.get, a task's own error raised as itself (a DataError stays one)."""
        try:
            return self._ray.get(ref)
        except self._ray.exceptions.RayTaskError as e:
            cause = e.as_instanceof_cause()
            raise (getattr(cause, "cause", None) or cause) from None

    def _collect(self, task_id: str) -> Reply:
        while True:
            run = self._open[task_id]
            if run.tries > self._sim.retries:
                del self._open[task_id]
                self._fill()
                raise TaskLost(f"{run.task.client_id}: its Ray actor died "
                               f"{run.tries} time(s) while running the task")
            if run.ref is None:
                self._submit(run)
            try:
                reply, node = self._get(run.ref)
            except self._ray.exceptions.RayActorError:
                self._died(run)
                continue
            del self._open[task_id]
            self._flying -= 1
            self.tasks_on[node] += 1
            self._fill()
            return reply  # type: ignore[no-any-return]

    # -- the transport -------------------------------------------------------------------------

    def clients(self) -> list[str]:
        return list(self.names)

    def start(self, tasks: Sequence[Task]) -> None:
        """Begin `tasks` (replies are handed back in this order by `call`)."""
        for task in tasks:
            if task.client_id not in self.slot:
                raise UnknownClient(f"no institution named '{task.client_id}'")
            self._open[task.task_id] = _Open(task, self.slot[task.client_id])
            self._queue.append(task.task_id)
        self._fill()

    dispatch = start

    def call(self, task: Task) -> Reply:
        """The reply to `task` (started now if it was not), or TaskLost."""
        if task.task_id not in self._open:
            self.start([task])
        return self._collect(task.task_id)

    def poll(self, timeout: float | None = None) -> Iterator[Reply]:
        while self._open:
            try:
                yield self._collect(next(iter(self._open)))
            except TaskLost as e:
                log.warning("%s", e)

    def next_reply(self, timeout: float) -> Reply | None:
        return next(self.poll(timeout), None)

    def withdraw(self, task_ids: Sequence[str]) -> None:
        for task_id in task_ids:
            run = self._open.pop(task_id, None)
            if run is not None and run.ref is not None:
                self._flying -= 1
        self._fill()

    def acknowledge(self, reply: Reply, rejection: Rejection | None) -> None:
        """Nothing to send back: the rejection is in the round's event."""

    def close(self) -> None:
        """Stop the actors (and Ray, if this transport started it)."""
        self._open.clear()
        self._queue.clear()
        self._flying = 0
        self._puts.clear()
        for actor in self._actors:
            self._ray.kill(actor)
        self._actors = []
        if self._owns:
            self._ray.shutdown()
