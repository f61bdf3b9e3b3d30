"""The run store: runs, their config, every round's participants, per-institution and global
metrics, privacy spent, events and the audit chain, in SQLite (a file in the results folder,
the default) or PostgreSQL (a consortium's shared server, by URL) — same schema via
SQLAlchemy. The dashboard reads it live while training writes it."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, delete, func, insert, select, update
from sqlalchemy.engine import Engine

from fedsilo.engine.events import RoundEvent
from fedsilo.errors import ConfigError
from fedsilo.store import audit as audit_chain
from fedsilo.store.disk import disk_error
from fedsilo.store.redact import redact_config, redact_url
from fedsilo.store.schema import (
    audit,
    events,
    institution_metrics,
    metadata,
    participation,
    rounds,
    runs,
    size,
)
from fedsilo.store.values import finite, fit, strict_json
from fedsilo.store.writer import describe

DEFAULT_FILE = "fedsilo.db"
INSTITUTION = audit_chain.INSTITUTION
METRIC = size(institution_metrics.c.name)
RUN_ID = size(runs.c.run_id)
NAME = RUN_ID - 20  # a run id is the name, '-', the start time (15) and maybe '-n'

log = logging.getLogger(__name__)


def store_url(target: str | Path) -> str:
    """A database URL from a URL, a .db file or a results folder (its fedsilo.db)."""
    text = str(target)
    if "://" in text:
        return text
    path = Path(text)
    if path.is_dir() or not path.suffix:
        path = path / DEFAULT_FILE
    return f"sqlite:///{path.resolve()}"


def epsilon_of(event: RoundEvent) -> float | None:
    """The privacy spent so far that a round reports (central/distributed or local DP)."""
    for part, key in (("aggregator", "epsilon"), ("client_work", "dp_epsilon")):
        value = event.metrics.get(part, {}).get(key) if isinstance(
            event.metrics.get(part), Mapping) else None
        if value is not None:
            return finite(value)
    return None


def check_name(name: str) -> None:
    """Raises ConfigError if runs called `name` would not fit the store."""
    if len(name) > NAME:
        raise ConfigError(f"run.name is {len(name)} characters; the run store holds names of "
                          f"up to {NAME}")


def _json(value: Any) -> str:
    return strict_json(value, sort_keys=True)


class RunStore:
    """Args:
        url: an SQLAlchemy URL (sqlite:///path.db, postgresql+psycopg://user@host/db), a .db
            file or a results folder.
        create: make an SQLite store that does not exist yet (runs do); False to only open
            an existing one (the audit and the dashboard read what runs wrote).

    Attributes:
        url: the store's URL for messages, its password hidden (the engine has the real one).

    Raises:
        ConfigError: the store cannot be opened, or (create=False) there is no SQLite store
            at that path (none is created).
    """

    def __init__(self, url: str | Path, create: bool = True) -> None:
        real = store_url(url)
        self.url = redact_url(real)
        if real.startswith("sqlite:///"):
            path = Path(real[len("sqlite:///"):])
            if not create and not path.is_file():
                raise ConfigError(f"no run store at {path} (a run creates it; --store names "
                                  f"a results folder, a .db file or a database URL)")
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise disk_error(path.parent, "the run store", e) from None
        try:
            self.engine: Engine = create_engine(real, future=True)
            metadata.create_all(self.engine)
        except Exception as e:  # a bad URL, an unreachable server, a missing driver, a full
            hint = ("; its folder must be writable, with free space (or set [store] url)"
                    if real.startswith("sqlite") else "")  # or read-only disk (SQLite)
            raise ConfigError(f"run store '{self.url}' cannot be opened: "
                              f"{describe(e, real)}{hint}") from None

    # writing ----------------------------------------------------------------------------
    def start_run(self, run_id: str, name: str, config: Mapping[str, Any], mode: str,
                  strategy: str, metric: str) -> None:
        """The run's row. Raises ConfigError (before writing) if its id does not fit."""
        if len(run_id) > RUN_ID:
            raise ConfigError(f"run id of {len(run_id)} characters: the run store holds up "
                              f"to {RUN_ID}; shorten run.name")
        with self.engine.begin() as db:
            db.execute(insert(runs).values(
                run_id=run_id, name=name, started_at=time.time(), status="running", mode=mode,
                strategy=strategy, metric=metric, config=_json(redact_config(dict(config)))))
            db.execute(insert(events).values(run_id=run_id, time=time.time(), kind="start",
                                             message=f"run '{name}' started"))

    def record(self, run_id: str, event: RoundEvent) -> None:
        """One round, in one transaction: round row, participants, metrics, audit entry.
        Institution and metric names longer than their columns are shortened (`fit`); metric
        values that are NaN or infinite are not stored (missing)."""
        entry = audit_chain.canonical(audit_chain.entry_of(event))
        with self.engine.begin() as db:
            prev = db.execute(select(audit.c.hash).where(audit.c.run_id == run_id)
                              .order_by(audit.c.round.desc()).limit(1)).scalar()
            prev = prev or audit_chain.GENESIS
            db.execute(insert(rounds).values(
                run_id=run_id, round=event.round, version=event.version,
                seconds=finite(event.seconds) or 0.0,
                clock_time=finite(event.metrics.get("clock", {}).get("time")),
                epsilon=epsilon_of(event), federated=_json(dict(event.federated)),
                metrics=_json(event.metrics), model_digest=event.model_digest))
            rows = _participation(run_id, event)
            if rows:
                db.execute(insert(participation), rows)
            values = _metric_rows(run_id, event)
            if values:
                db.execute(insert(institution_metrics), values)
            db.execute(insert(audit).values(run_id=run_id, round=event.round, entry=entry,
                                            prev_hash=prev,
                                            hash=audit_chain.chain_hash(prev, entry)))

    def log(self, run_id: str, kind: str, message: str) -> None:
        with self.engine.begin() as db:
            db.execute(insert(events).values(run_id=run_id, time=time.time(), kind=kind,
                                             message=message))

    def finish(self, run_id: str, status: str = "finished",
               comparison: Mapping[str, Any] | None = None) -> None:
        with self.engine.begin() as db:
            db.execute(update(runs).where(runs.c.run_id == run_id).values(
                status=status, finished_at=time.time(),
                comparison=None if comparison is None else _json(comparison)))
            db.execute(insert(events).values(run_id=run_id, time=time.time(), kind=status,
                                             message=f"run {status}"))

    def forget_after(self, run_id: str, round: int) -> None:
        """Drop what was recorded after `round` (a resumed run recomputes those rounds)."""
        with self.engine.begin() as db:
            for table in (rounds, participation, institution_metrics, audit):
                db.execute(delete(table).where(table.c.run_id == run_id,
                                               table.c.round > round))
            db.execute(update(runs).where(runs.c.run_id == run_id).values(status="running"))
            db.execute(insert(events).values(run_id=run_id, time=time.time(), kind="resume",
                                             message=f"resumed after round {round}"))

    # reading ----------------------------------------------------------------------------
    def runs(self) -> list[dict[str, Any]]:
        """Every run, newest first, with its last round and final federated metrics."""
        with self.engine.connect() as db:
            last = (select(rounds.c.run_id, func.max(rounds.c.round).label("last"))
                    .group_by(rounds.c.run_id).subquery())
            rows = db.execute(select(runs, last.c.last).outerjoin(
                last, runs.c.run_id == last.c.run_id).order_by(runs.c.started_at.desc()))
            return [{k: v for k, v in r._mapping.items() if k != "config"} for r in rows]

    def latest(self, name: str, status: str = "running") -> str | None:
        """The newest run called `name` with `status` (what `--resume` continues)."""
        with self.engine.connect() as db:
            return db.execute(select(runs.c.run_id).where(runs.c.name == name,
                                                          runs.c.status == status)
                              .order_by(runs.c.started_at.desc()).limit(1)).scalar()

    def run(self, run_id: str) -> dict[str, Any]:
        """One run with its rounds, participation and per-institution metrics.

        Raises:
            ConfigError: no such run in this store.
        """
        with self.engine.connect() as db:
            head = db.execute(select(runs).where(runs.c.run_id == run_id)).first()
            if head is None:
                raise ConfigError(f"no run '{run_id}' in {self.url}")
            out = dict(head._mapping)
            out["config"] = redact_config(json.loads(out["config"]))
            out["comparison"] = json.loads(out["comparison"]) if out["comparison"] else None
            out["rounds"] = [{**dict(r._mapping), "federated": json.loads(r.federated),
                              "metrics": json.loads(r.metrics)} for r in db.execute(
                select(rounds).where(rounds.c.run_id == run_id).order_by(rounds.c.round))]
            out["participation"] = [dict(r._mapping) for r in db.execute(
                select(participation).where(participation.c.run_id == run_id)
                .order_by(participation.c.round, participation.c.institution))]
            out["institution_metrics"] = [dict(r._mapping) for r in db.execute(
                select(institution_metrics).where(institution_metrics.c.run_id == run_id)
                .order_by(institution_metrics.c.round))]
            out["events"] = [dict(r._mapping) for r in db.execute(
                select(events).where(events.c.run_id == run_id).order_by(events.c.id))]
        return out

    def verify(self, run_id: str) -> audit_chain.Verdict:
        """Check the run's audit chain and that it agrees with the recorded rounds."""
        data = self.run(run_id)
        with self.engine.connect() as db:
            chain = [dict(r._mapping) for r in db.execute(
                select(audit).where(audit.c.run_id == run_id).order_by(audit.c.round))]
        if len(chain) != len(data["rounds"]):
            return audit_chain.Verdict(False, len(chain), f"{len(data['rounds'])} rounds "
                                       f"recorded but {len(chain)} audit entries")
        return audit_chain.verify_chain(chain, _facts(data))


def _participation(run_id: str, event: RoundEvent) -> list[dict[str, Any]]:
    """The round's participation rows: accepted, then rejected (with the reason)."""
    rows = [{"run_id": run_id, "round": event.round, "institution": fit(c, INSTITUTION),
             "status": "accepted", "reason": None, "update_digest": event.digests.get(c)}
            for c in sorted(set(event.participants))]
    rows += [{"run_id": run_id, "round": event.round, "institution": fit(c, INSTITUTION),
              "status": "rejected", "reason": r, "update_digest": None}
             for c, r in sorted(event.rejected.items()) if c not in event.participants]
    return rows


def _metric_rows(run_id: str, event: RoundEvent) -> list[dict[str, Any]]:
    """The round's per-institution metric rows: finite values only, names that fit."""
    rows, missing, shortened = [], 0, 0
    for inst, metrics in event.evaluation.items():
        for name, value in metrics.items():
            number = finite(value)
            if number is None:
                missing += 1
                continue
            shortened += len(name) > METRIC or len(inst) > INSTITUTION
            rows.append({"run_id": run_id, "round": event.round,
                         "institution": fit(inst, INSTITUTION), "name": fit(name, METRIC),
                         "value": number})
    if missing:
        log.warning("run store: round %d: %d metric value(s) not finite (NaN, infinite, not a "
                    "number), stored as missing", event.round, missing)
    if shortened:
        log.warning("run store: round %d: %d metric(s) with an institution or metric name "
                    "longer than its column, stored shortened (its start, '~', SHA-256)",
                    event.round, shortened)
    return rows


def _facts(data: Mapping[str, Any]) -> dict[int, dict[str, Any]]:
    """Each round's audit entry rebuilt from the rounds and participation tables."""
    out: dict[int, dict[str, Any]] = {}
    for r in data["rounds"]:
        rows = [p for p in data["participation"] if p["round"] == r["round"]]
        out[r["round"]] = {
            "round": r["round"], "version": r["version"],
            "contributors": {p["institution"]: p["update_digest"] or "" for p in
                             sorted(rows, key=lambda p: p["institution"])
                             if p["status"] == "accepted"},
            "rejected": {p["institution"]: p["reason"] for p in
                         sorted(rows, key=lambda p: p["institution"])
                         if p["status"] == "rejected"},
            "model": r["model_digest"]}
    return out
