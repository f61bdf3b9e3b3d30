"""Recorder: where a run leaves its traces — the run store (rounds, participants, metrics,
privacy spent, audit chain), checkpoints, and optionally TensorBoard event files. It listens to
the round events (engine/events.py), so simulation and deployment record the same way."""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fedsilo.algorithms.base import ServerState
from fedsilo.engine.events import RoundEvent
from fedsilo.errors import ConfigError
from fedsilo.store.checkpoint import (
    FILE,
    Checkpoint,
    Checkpointer,
    load_checkpoint,
    save_checkpoint,
)
from fedsilo.store.disk import writing
from fedsilo.store.run_store import RunStore, check_name, epsilon_of
from fedsilo.store.signing import SEAL_COPY, AuditSigner, kit_signer, run_signer
from fedsilo.store.writer import SafeWriter

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
        signer: the key that signs the run's audit entries (the server kit's, or the run's
            own); None: a key made in memory by the store.

    Nothing it does during the rounds raises into the round loop: store writes go through a
    SafeWriter (retried, kept, logged), a checkpoint that cannot be written is logged (the
    previous one stays), TensorBoard stops on its first failure. Only `finish("finished")`
    insists: a run is finished once its last state is checkpointed.
    """

    def __init__(self, store: RunStore | None, run_id: str, folder: Path, rounds: int,
                 checkpoint_every: int = 1, tensorboard: bool = False,
                 signer: AuditSigner | None = None) -> None:
        self.store, self.run_id, self.folder = store, run_id, folder
        if store is not None and signer is not None:
            store.use_signer(run_id, signer)
        self._write = (SafeWriter(store.url, explain=store.describe) if store is not None
                       else None)
        self._checkpointer = (Checkpointer(folder, checkpoint_every, rounds)
                              if checkpoint_every else None)
        self._unsaved: tuple[int, ServerState] | None = None  # the newest state not on disk
        self._resume_from: Checkpoint | None = None
        self._tb: Any = None
        if tensorboard:
            from tensorboardX import SummaryWriter

            with writing(folder / "tensorboard", "TensorBoard files"):
                self._tb = SummaryWriter(logdir=str(folder / "tensorboard"))

    def _store(self, what: str, write: Callable[[RunStore], None]) -> None:
        if self.store is not None and self._write is not None:
            store = self.store
            self._write(what, lambda: write(store))

    def start(self, name: str, config: Mapping[str, Any], mode: str, strategy: str,
              metric: str) -> None:
        self._store(f"the start of run {self.run_id}", lambda s: s.start_run(
            self.run_id, name, config, mode, strategy, metric))

    def resume_point(self) -> Checkpoint:
        """The checkpoint `--resume` continues from (read once).

        Raises:
            ConfigError: it is missing or damaged, or its model is not the one the signed
                audit entry of its round holds, or the run is signed by another key than
                this recorder's, naming its path and what to do; nothing recorded is touched
                then.
        """
        if self._resume_from is None:
            saved = load_checkpoint(self.folder)
            if saved is None:
                why = ("run.checkpoint_every = 0 saves none" if self._checkpointer is None else
                       "the run stopped before its first checkpoint, or the file was removed")
                raise ConfigError(f"--resume: no checkpoint at {self.folder / FILE} for run "
                                  f"{self.run_id} ({why}). Restore the file, or start the run "
                                  f"again without --resume (a new run; the rounds recorded so "
                                  f"far stay in the store)")
            self._check_in_chain(saved)
            if self.store is not None:
                self.store.check_signer(self.run_id)
            self._resume_from = saved
        return self._resume_from

    def _check_in_chain(self, saved: Checkpoint) -> None:
        """The checkpoint's model must be the one the signed audit entry of its round holds.

        Raises:
            ConfigError: it is not (the file was replaced or edited), or the chain holds no
                signed entry for that round.
        """
        if self.store is None or saved.round == 0:
            return
        from fedsilo.core.params import digest

        audited = self.store.audited_model(self.run_id, saved.round)
        if audited == "":  # recorded without digests (no audit): nothing to compare
            return
        path = self.folder / FILE
        if audited is None:
            raise ConfigError(f"--resume: the audit trail of run {self.run_id} holds no "
                              f"signed entry for round {saved.round}, the round of {path} "
                              f"(its entry was removed or forged, or the run was recorded "
                              f"before audit signing): the checkpoint cannot be checked, so "
                              f"it is not used. Check "
                              f"the run with `fedsilo audit verify {self.run_id}`, or start "
                              f"the run again without --resume")
        if digest(saved.state.params) != audited:
            raise ConfigError(f"--resume: {path} is not the model the audit trail signed for "
                              f"round {saved.round} (the file was replaced or edited); it is "
                              f"not used. Restore the checkpoint, or start the run again "
                              f"without --resume")

    def resume(self) -> tuple[int, ServerState]:
        """The last checkpoint of this run; what the store recorded after it is dropped (those
        rounds run again).

        Raises:
            ConfigError: the checkpoint is missing or damaged (see `resume_point`).
        """
        saved = self.resume_point()
        with contextlib.suppress(OSError):  # the run's end is open again; a new seal comes
            (self.folder / SEAL_COPY).unlink(missing_ok=True)
        self._store(f"the resumption of run {self.run_id}",
                    lambda s: s.forget_after(self.run_id, saved.round))
        log.warning("resuming run %s after round %d", self.run_id, saved.round)
        return saved.round, saved.state

    def __call__(self, event: RoundEvent) -> None:
        self._store(f"round {event.round}", lambda s: s.record(self.run_id, event))
        if self._tb is not None:
            self._tensorboard(event)

    def checkpoint(self, round: int, state: ServerState) -> None:
        """Called after each committed round: saves when due (a failure is logged)."""
        if self._checkpointer is None:
            return
        self._unsaved = (round, state)
        if self._checkpointer.due(round):
            self._save(strict=False)

    def _save(self, strict: bool) -> None:
        if self._unsaved is None:
            return
        round, state = self._unsaved
        try:
            save_checkpoint(self.folder, round, state)
        except ConfigError as e:
            if strict:
                raise
            log.warning("%s. The run goes on; the previous checkpoint stays", e)
            return
        self._unsaved = None

    def finish(self, status: str = "finished",
               comparison: Mapping[str, Any] | None = None) -> None:
        """Record the run's end. A finished run first checkpoints its last state.

        Raises:
            ConfigError: that checkpoint cannot be written (the run is recorded as failed).
        """
        try:
            if status == "finished":
                self._save(strict=True)
        except ConfigError:
            self._end("failed", None)
            raise
        self._end(status, comparison)

    def _end(self, status: str, comparison: Mapping[str, Any] | None) -> None:
        self._store(f"the end of run {self.run_id}",
                    lambda s: s.finish(self.run_id, status, comparison))
        if self._write is not None and not self._write.drain():
            lost = self._write.lost()
            log.error("run store %s: %d write(s) could not be recorded (%s ... %s); the "
                      "run's results folder %s holds what was written there", self._write.url,
                      len(lost), lost[0], lost[-1], self.folder)
        else:
            self._copy_seal()
        if self._tb is not None:
            with contextlib.suppress(Exception):
                self._tb.close()

    def _copy_seal(self) -> None:
        """A copy of the run's signed final entry in its results folder (audit-seal.json), so
        that removing the end of the run from the store, seal included, is caught. A failure
        is logged: the store holds the seal."""
        if self.store is None:
            return
        try:
            seal = self.store.seal(self.run_id)
            if seal is not None:
                with writing(self.folder / SEAL_COPY, "the audit seal"):
                    (self.folder / SEAL_COPY).write_text(json.dumps(seal, sort_keys=True))
        except Exception as e:  # noqa: BLE001 (the run is recorded; the copy is a second anchor)
            log.warning("the copy of run %s's audit seal in %s was not written (%s)",
                        self.run_id, self.folder, type(e).__name__)

    def _tensorboard(self, event: RoundEvent) -> None:
        try:
            self._write_scalars(event)
        except Exception as e:  # noqa: BLE001 (TensorBoard is a convenience, never a stop)
            log.warning("TensorBoard files in %s: %s; no more are written for this run",
                        self.folder / "tensorboard", type(e).__name__)
            self._tb = None

    def _write_scalars(self, event: RoundEvent) -> None:
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
    """A fresh run id (<name>-<time>[-n]) and its results folder, created.

    Raises:
        ConfigError: the folder cannot be created (read-only, full, a file in the way).
    """
    import time

    stamp = time.strftime("%Y%m%d-%H%M%S")
    run_id, n = f"{name}-{stamp}", 1
    with writing(output_dir, "the results folder"):
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


def recorder_for(cfg: RunConfig, run_id: str, folder: Path,
                 kit: Path | None = None) -> Recorder:
    """The recorder a run config asks for: its store, checkpoints every run.checkpoint_every
    rounds, TensorBoard if [logging] tensorboard; its audit entries signed with the server
    kit's key (`kit`: server.key, server.pem), else with a key made for the run (its
    results folder holds it: audit.key, audit.pem).

    Raises:
        ConfigError: the kit's key does not load, or the run's key cannot be written.
    """
    return _recorder(cfg, store_for(cfg), run_id, folder, kit)


def _recorder(cfg: RunConfig, store: RunStore | None, run_id: str, folder: Path,
              kit: Path | None) -> Recorder:
    """`recorder_for` with its store already open (None: no store)."""
    signer = None
    if store is not None:
        signer = (kit_signer(kit) if kit is not None else None) or run_signer(folder, run_id)
    return Recorder(store, run_id, folder, cfg.run.rounds, cfg.run.checkpoint_every,
                    cfg.logging.tensorboard, signer)


def start_run(cfg: RunConfig, metric: str, kit: Path | None = None) -> Recorder:
    """A new run: its id, its results folder, its row in the store.

    Raises:
        ConfigError: run.name is too long for the store, or the results folder cannot be
            written.
    """
    if cfg.store.enabled:
        check_name(cfg.run.name)
    run_id, folder = new_run(Path(cfg.run.output_dir), cfg.run.name)
    recorder = recorder_for(cfg, run_id, folder, kit)
    recorder.start(cfg.run.name, cfg.model_dump(mode="json"), cfg.run.mode, cfg.strategy.name,
                   metric)
    return recorder


def unfinished_run(cfg: RunConfig, kit: Path | None = None) -> Recorder:
    """The recorder of the newest unfinished run of this config (what --resume continues).

    Raises:
        ConfigError: the store holds no such run, or its checkpoint is missing, damaged, or
            not the model the run's signed audit trail holds for its round.
    """
    store = store_for(cfg)  # opened once: it finds the run and records it
    lookup = store or RunStore(Path(cfg.run.output_dir) / "fedsilo.db")
    run_id = lookup.latest(cfg.run.name)
    if run_id is None:
        raise ConfigError(f"--resume: no unfinished run named '{cfg.run.name}' in {lookup.url}")
    recorder = _recorder(cfg, store, run_id, Path(cfg.run.output_dir) / run_id, kit)
    recorder.resume_point()  # a missing or damaged checkpoint stops here, before any work
    return recorder
