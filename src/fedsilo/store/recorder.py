"""Recorder: where a run leaves its traces — the run store (rounds, participants, metrics,
privacy spent, audit chain), checkpoints, and optionally TensorBoard event files. It listens to
the round events (engine/events.py), so simulation and deployment record the same way."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fedsilo.algorithms.base import ServerState
from fedsilo.engine.events import RoundEvent
from fedsilo.errors import ConfigError
from fedsilo.store.checkpoint import Checkpointer, load_checkpoint
from fedsilo.store.run_store import RunStore, epsilon_of

if TYPE_CHECKING:
    from fedsilo.config.schema import RunConfig

log = logging.getLogger(__name__)


class Recorder:
    """Args:
        store: the run store (None: record nothing there).
        run_id: the run's id (also the name of its results folder).
        folder: the run's results folder (checkpoints, TensorBoard files).
        rounds: the run's last round (always checkpointed).
        checkpoint_every: save the server state every N rounds (0: never).
        tensorboard: also write TensorBoard event files to folder/tensorboard.
    """

    def __init__(self, store: RunStore | None, run_id: str, folder: Path, rounds: int,
                 checkpoint_every: int = 1, tensorboard: bool = False) -> None:
        self.store, self.run_id, self.folder = store, run_id, folder
        self._checkpointer = (Checkpointer(folder, checkpoint_every, rounds)
                              if checkpoint_every else None)
        self._tb: Any = None
        if tensorboard:
            from tensorboardX import SummaryWriter

            self._tb = SummaryWriter(logdir=str(folder / "tensorboard"))

    def start(self, name: str, config: Mapping[str, Any], mode: str, strategy: str,
              metric: str) -> None:
        if self.store is not None:
            self.store.start_run(self.run_id, name, config, mode, strategy, metric)

    def resume(self) -> tuple[int, ServerState] | None:
        """The last checkpoint of this run, with what the store recorded after it dropped."""
        saved = load_checkpoint(self.folder)
        done = saved.round if saved is not None else 0
        if self.store is not None:
            self.store.forget_after(self.run_id, done)
        log.warning("resuming run %s after round %d", self.run_id, done)
        return None if saved is None else (saved.round, saved.state)

    def __call__(self, event: RoundEvent) -> None:
        if self.store is not None:
            self.store.record(self.run_id, event)
        if self._tb is not None:
            self._tensorboard(event)

    def checkpoint(self, round: int, state: ServerState) -> None:
        if self._checkpointer is not None:
            self._checkpointer(round, state)

    def finish(self, status: str = "finished",
               comparison: Mapping[str, Any] | None = None) -> None:
        if self.store is not None:
            self.store.finish(self.run_id, status, comparison)
        if self._tb is not None:
            self._tb.close()

    def _tensorboard(self, event: RoundEvent) -> None:
        step = event.round
        for key, value in event.federated.items():
            self._tb.add_scalar(f"federated/{key}", value, step)
        for inst, metrics in event.evaluation.items():
            for key, value in metrics.items():
                self._tb.add_scalar(f"{key}/{inst}", value, step)
        self._tb.add_scalar("participants", len(event.participants), step)
        epsilon = epsilon_of(event)
        if epsilon is not None:
            self._tb.add_scalar("privacy/epsilon", epsilon, step)
        self._tb.flush()


def new_run(output_dir: Path, name: str) -> tuple[str, Path]:
    """A fresh run id (<name>-<time>[-n]) and its results folder, created."""
    import time

    stamp = time.strftime("%Y%m%d-%H%M%S")
    run_id, n = f"{name}-{stamp}", 1
    while (output_dir / run_id).exists():
        run_id, n = f"{name}-{stamp}-{n}", n + 1
    folder = output_dir / run_id
    folder.mkdir(parents=True)
    return run_id, folder


def store_for(cfg: RunConfig) -> RunStore | None:
    """The run store a config names: [store] url, else fedsilo.db in run.output_dir; None if
    [store] enabled = false."""
    if not cfg.store.enabled:
        return None
    return RunStore(cfg.store.url or Path(cfg.run.output_dir) / "fedsilo.db")


def recorder_for(cfg: RunConfig, run_id: str, folder: Path) -> Recorder:
    """The recorder a run config asks for: its store, checkpoints every run.checkpoint_every
    rounds, TensorBoard if [logging] tensorboard."""
    return Recorder(store_for(cfg), run_id, folder, cfg.run.rounds, cfg.run.checkpoint_every,
                    cfg.logging.tensorboard)


def start_run(cfg: RunConfig, metric: str) -> Recorder:
    """A new run: its id, its results folder, its row in the store."""
    run_id, folder = new_run(Path(cfg.run.output_dir), cfg.run.name)
    recorder = recorder_for(cfg, run_id, folder)
    recorder.start(cfg.run.name, cfg.model_dump(mode="json"), cfg.run.mode, cfg.strategy.name,
                   metric)
    return recorder


def unfinished_run(cfg: RunConfig) -> Recorder:
    """The recorder of the newest unfinished run of this config (what --resume continues).

    Raises:
        ConfigError: the store holds no such run.
    """
    store = store_for(cfg) or RunStore(Path(cfg.run.output_dir) / "fedsilo.db")
    run_id = store.latest(cfg.run.name)
    if run_id is None:
        raise ConfigError(f"--resume: no unfinished run named '{cfg.run.name}' in {store.url}")
    return recorder_for(cfg, run_id, Path(cfg.run.output_dir) / run_id)
