"""The run store: runs, their config, every round's participants, per-institution and global
metrics, privacy spent, events and the audit chain, in SQLite (a file in the results folder,
the default) or PostgreSQL (a consortium's shared server, by URL) — same schema via
SQLAlchemy. The dashboard reads it live while training writes it."""

from __future__ import annotations

import hashlib
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
from fedsilo.store import contributions as signed_updates
from fedsilo.store import signing
from fedsilo.store.disk import disk_error
from fedsilo.store.redact import redact_config, redact_url
from fedsilo.store.schema import (
    audit,
    audit_keys,
    audit_seal,
    audit_signatures,
    contributions,
    events,
    identities,
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
        self._signers: dict[str, signing.AuditSigner] = {}
        self._keyed: set[str] = set()          # runs whose stored certificate was checked
        self._configs: dict[str, str] = {}     # each run's stored config, read once
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

    def use_signer(self, run_id: str, signer: signing.AuditSigner) -> None:
        """Sign run `run_id`'s audit entries with `signer` (the server's key)."""
        self._signers[run_id] = signer
        self._keyed.discard(run_id)  # check it against the stored certificate again

    def _signer(self, db: Any, run_id: str) -> signing.AuditSigner:
        """The run's signer, its certificate stored with the run on first use. A run recorded
        without one (a store used directly) gets a key made in memory, origin "store".

        Raises:
            ConfigError: the run is already signed by another key than the one given.
        """
        signer = self._signers.get(run_id)
        if signer is not None and run_id in self._keyed:  # checked (and stored) already
            return signer
        stored = db.execute(select(audit_keys.c.certificate).where(
            audit_keys.c.run_id == run_id)).scalar()
        if signer is None and stored is None:
            signer = self._signers[run_id] = signing.new_signer(run_id, "store")
        if signer is None:
            raise ConfigError(f"run {run_id}: its audit trail is signed by a key this process "
                              f"does not hold")
        if stored is None:
            db.execute(insert(audit_keys).values(run_id=run_id, certificate=signer.certificate,
                                                 origin=signer.origin))
        elif stored != signer.certificate:
            raise ConfigError(f"run {run_id}: its audit trail is signed by another key than "
                              f"this server's")
        return signer

    def check_signer(self, run_id: str) -> None:
        """Raises ConfigError if the run's audit trail is signed by another key than the one
        given with `use_signer` (a resumed run must be signed on with the key it began with)."""
        signer = self._signers.get(run_id)
        with self.engine.connect() as db:
            stored = db.execute(select(audit_keys.c.certificate).where(
                audit_keys.c.run_id == run_id)).scalar()
        if signer is not None and stored is not None and stored != signer.certificate:
            raise ConfigError(f"run {run_id}: its audit trail is signed by another key than "
                              f"this one ({signer.origin}); resume it with the key it began "
                              f"with (the same server kit)")

    def record(self, run_id: str, event: RoundEvent) -> None:
        """One round, in one transaction: round row, participants, metrics, audit entry (with
        the digests of the round's metrics and of the run's config, signed). Institution and
        metric names longer than their columns are shortened (`fit`); metric values that are
        NaN or infinite are not stored (missing)."""
        row = {"run_id": run_id, "round": event.round, "version": event.version,
               "seconds": finite(event.seconds) or 0.0,
               "clock_time": finite(event.metrics.get("clock", {}).get("time")),
               "epsilon": epsilon_of(event), "federated": _json(dict(event.federated)),
               "metrics": _json(event.metrics), "model_digest": event.model_digest}
        values = _metric_rows(run_id, event)
        with self.engine.begin() as db:
            signer = self._signer(db, run_id)
            config = self._config(db, run_id)
            entry = audit_chain.canonical({**audit_chain.entry_of(event),
                                           **_signed_facts(row, values, config)})
            prev = db.execute(select(audit.c.hash).where(audit.c.run_id == run_id)
                              .order_by(audit.c.round.desc()).limit(1)).scalar()
            prev = prev or audit_chain.GENESIS
            db.execute(insert(rounds).values(**row))
            rows = _participation(run_id, event)
            if rows:
                db.execute(insert(participation), rows)
            if values:
                db.execute(insert(institution_metrics), values)
            self._record_signed(db, run_id, event)
            digest = audit_chain.chain_hash(prev, entry)
            db.execute(insert(audit).values(run_id=run_id, round=event.round, entry=entry,
                                            prev_hash=prev, hash=digest))
            db.execute(insert(audit_signatures).values(
                run_id=run_id, round=event.round, signature=signer.sign(run_id, digest)))
        self._keyed.add(run_id)  # committed: the certificate is stored, no need to re-read

    def _record_signed(self, db: Any, run_id: str, event: RoundEvent) -> None:
        """The institutions' signatures of the round's accepted updates, and each certificate
        they signed with, once per run."""
        signed = {c: event.signed[c] for c in sorted(set(event.participants))
                  if c in event.signed and c in event.digests}
        if not signed:
            return
        certificates = {_digest(s.certificate): s.certificate for s in signed.values()}
        db.execute(insert(contributions), [
            {"run_id": run_id, "round": event.round, "institution": fit(c, INSTITUTION),
             "signed_round": s.round, "signature": s.signature,
             "certificate": _digest(s.certificate)} for c, s in signed.items()])
        known = set(db.execute(select(identities.c.sha256).where(
            identities.c.run_id == run_id)).scalars())
        new = [{"run_id": run_id, "sha256": sha, "certificate": pem}
               for sha, pem in certificates.items() if sha not in known]
        if new:
            db.execute(insert(identities), new)

    def _config(self, db: Any, run_id: str) -> str | None:
        """The run's stored config (JSON text), read once per run."""
        if run_id not in self._configs:
            config = db.execute(select(runs.c.config).where(runs.c.run_id == run_id)).scalar()
            if config is None:
                return None
            self._configs[run_id] = config
        return self._configs[run_id]

    def describe(self, error: BaseException) -> str:
        """`writer.describe` of an error of this store, scrubbed of the real URL's password
        (`url` has it hidden already, so it cannot serve to scrub)."""
        return describe(error, self.engine.url.render_as_string(hide_password=False))

    def log(self, run_id: str, kind: str, message: str) -> None:
        with self.engine.begin() as db:
            db.execute(insert(events).values(run_id=run_id, time=time.time(), kind=kind,
                                             message=message))

    def finish(self, run_id: str, status: str = "finished",
               comparison: Mapping[str, Any] | None = None) -> None:
        with self.engine.begin() as db:
            self._seal(db, run_id, status)
            db.execute(update(runs).where(runs.c.run_id == run_id).values(
                status=status, finished_at=time.time(),
                comparison=None if comparison is None else _json(comparison)))
            db.execute(insert(events).values(run_id=run_id, time=time.time(), kind=status,
                                             message=f"run {status}"))

    def _seal(self, db: Any, run_id: str, status: str) -> None:
        """The signed final entry: how the run ended, its rounds, its final model."""
        signer = self._signer(db, run_id)
        last = db.execute(select(audit.c.round, audit.c.hash).where(audit.c.run_id == run_id)
                          .order_by(audit.c.round.desc()).limit(1)).first()
        count = db.execute(select(func.count()).select_from(audit)
                           .where(audit.c.run_id == run_id)).scalar() or 0
        model = db.execute(select(rounds.c.model_digest).where(
            rounds.c.run_id == run_id).order_by(rounds.c.round.desc()).limit(1)).scalar()
        entry = audit_chain.canonical({"end": status, "rounds": count,
                                       "last": last.round if last else 0, "model": model or ""})
        prev = last.hash if last else audit_chain.GENESIS
        digest = audit_chain.chain_hash(prev, entry)
        db.execute(delete(audit_seal).where(audit_seal.c.run_id == run_id))
        db.execute(insert(audit_seal).values(run_id=run_id, entry=entry, prev_hash=prev,
                                             hash=digest,
                                             signature=signer.sign(run_id, digest)))

    def forget_after(self, run_id: str, round: int) -> None:
        """Drop what was recorded after `round` (a resumed run recomputes those rounds)."""
        with self.engine.begin() as db:
            for table in (rounds, participation, institution_metrics, audit,
                          audit_signatures, contributions):
                db.execute(delete(table).where(table.c.run_id == run_id,
                                               table.c.round > round))
            db.execute(delete(audit_seal).where(audit_seal.c.run_id == run_id))
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

    def seal(self, run_id: str) -> dict[str, Any] | None:
        """The run's signed final entry (entry, prev_hash, hash, signature), if sealed."""
        with self.engine.connect() as db:
            row = db.execute(select(audit_seal).where(audit_seal.c.run_id == run_id)).first()
        return None if row is None else {k: v for k, v in row._mapping.items()
                                         if k != "run_id"}

    def audited_model(self, run_id: str, round: int) -> str | None:
        """The global model digest that round `round`'s signed audit entry holds; None when
        there is no such entry, or it is unsigned (a run recorded before audit signing, or
        its certificate removed), or its signature does not verify."""
        with self.engine.connect() as db:
            row = db.execute(select(audit.c.entry, audit.c.hash).where(
                audit.c.run_id == run_id, audit.c.round == round)).first()
            sig = db.execute(select(audit_signatures.c.signature).where(
                audit_signatures.c.run_id == run_id, audit_signatures.c.round == round)).scalar()
            cert = db.execute(select(audit_keys.c.certificate).where(
                audit_keys.c.run_id == run_id)).scalar()
        if row is None or sig is None or cert is None or not signing.check_signature(
                cert, run_id, row.hash, sig):
            return None
        model = json.loads(row.entry).get("model")
        return model if isinstance(model, str) else None

    def verify(self, run_id: str, ca: bytes | None = None,
               folder: Path | None = None) -> audit_chain.Verdict:
        """Check the run's audit chain, its signatures and its sealed end, and that it agrees
        with the recorded rounds, metrics, privacy spent and config.

        Args:
            ca: the project CA (a kit's ca.pem): the signing certificate must be issued by it.
            folder: the run's results folder: its audit.pem (a simulation's key) must be the
                stored certificate, its model.npz the sealed final model.
        """
        data = self.run(run_id)
        with self.engine.connect() as db:
            chain = [dict(r._mapping) for r in db.execute(
                select(audit).where(audit.c.run_id == run_id).order_by(audit.c.round))]
            raw = [dict(r._mapping) for r in db.execute(
                select(rounds).where(rounds.c.run_id == run_id).order_by(rounds.c.round))]
            config = db.execute(select(runs.c.config).where(runs.c.run_id == run_id)).scalar()
            key = db.execute(select(audit_keys).where(audit_keys.c.run_id == run_id)).first()
            sigs = {r.round: r.signature for r in db.execute(select(audit_signatures).where(
                audit_signatures.c.run_id == run_id))}
            seal = db.execute(select(audit_seal).where(audit_seal.c.run_id == run_id)).first()
            by_institution = {(r.round, r.institution): dict(r._mapping) for r in db.execute(
                select(contributions).where(contributions.c.run_id == run_id))}
            certificates = {r.sha256: r.certificate for r in db.execute(
                select(identities).where(identities.c.run_id == run_id))}
        if len(chain) != len(data["rounds"]):
            return audit_chain.Verdict(False, len(chain), f"{len(data['rounds'])} rounds "
                                       f"recorded but {len(chain)} audit entries")
        verdict = audit_chain.verify_chain(chain, _facts(data, raw, config))
        if not verdict.ok:
            return verdict
        if key is None:
            return audit_chain.Verdict(False, 0, "no signing certificate stored with the run: "
                                       "its audit trail is unsigned (recorded before signing, "
                                       "or the certificate was removed)",
                                       chain[0]["round"] if chain else None)
        for i, row in enumerate(chain):
            sig = sigs.get(row["round"])
            if sig is None or not signing.check_signature(key.certificate, run_id,
                                                          row["hash"], sig):
                return audit_chain.Verdict(
                    False, i, f"round {row['round']}: the server's signature is "
                    f"{'missing' if sig is None else 'not valid'} (the entry was rewritten "
                    f"or re-chained by someone without the server's key)", row["round"])
        unsigned, bad, good = signed_updates.check_signed(
            run_id, data["participation"], by_institution, certificates, ca,
            required=ca is not None or bool(certificates))
        if unsigned:
            return audit_chain.Verdict(False, len(chain), unsigned, bad)
        accepted = sum(1 for p in data["participation"]
                       if p["status"] == "accepted" and p["update_digest"])
        problem = self._check_seal(run_id, data["status"], chain, seal, key.certificate)
        if not problem and ca is not None:
            problem = signing.issued_by(key.certificate, ca)
        if not problem and folder is not None:
            problem = _check_folder(folder, key.certificate, seal)
        if problem:
            bad = problem[1] if isinstance(problem, tuple) else None
            text = problem[0] if isinstance(problem, tuple) else problem
            return audit_chain.Verdict(False, len(chain), text, bad)
        anchor = ("by the server certificate issued by the project CA" if ca is not None else
                  f"by the key stored with the run ({key.origin}); pass --kit to check it "
                  f"against the project CA")
        end = "NOT sealed (the run is unfinished, or its end was removed)"
        if seal is not None:
            sealed = json.loads(seal.entry).get("end")
            end = f"sealed: {sealed}" + (f" (the runs table says {data['status']})"
                                         if sealed != data["status"] else "")
        return audit_chain.Verdict(True, len(chain), detail=(
            f"signed {anchor}; {end}; {good} of {accepted} updates signed by the institutions "
            f"that sent them"))

    def check_receipts(self, run_id: str, receipts: list[dict[str, Any]],
                       ca: bytes | None = None) -> tuple[list[str], int]:
        """Whether the trail records every update an institution's receipts acknowledge
        (`fedsilo.store.contributions.check_receipts`)."""
        data = self.run(run_id)
        with self.engine.connect() as db:
            certificate = db.execute(select(audit_keys.c.certificate).where(
                audit_keys.c.run_id == run_id)).scalar()
        return signed_updates.check_receipts(run_id, receipts, data["participation"],
                                             certificate or "", ca)

    @staticmethod
    def _check_seal(run_id: str, status: str, chain: list[dict[str, Any]], seal: Any,
                    certificate: str) -> str | tuple[str, int | None]:
        last = chain[-1] if chain else None
        if seal is None:
            if status == "running":
                return ""
            return (f"the run is recorded as {status} but has no signed final entry: its last "
                    f"round(s) or its end were removed", (last["round"] + 1) if last else 1)
        prev = last["hash"] if last else audit_chain.GENESIS
        if audit_chain.chain_hash(seal.prev_hash, seal.entry) != seal.hash or not \
                signing.check_signature(certificate, run_id, seal.hash, seal.signature):
            return "the final entry is not signed by the server (it was edited or forged)"
        entry = json.loads(seal.entry)
        if seal.prev_hash != prev or entry.get("rounds") != len(chain):
            return (f"the signed final entry closes a run of {entry.get('rounds')} rounds, "
                    f"the chain holds {len(chain)}: rounds were removed (truncation)",
                    len(chain) + 1)
        return ""


def _check_folder(folder: Path, certificate: str, seal: Any) -> str:
    """The results folder agrees with the store: its audit.pem is the stored certificate, its
    model.npz the sealed final model ("" when they agree or are absent)."""
    pem = folder / signing.RUN_CERT
    if pem.is_file() and pem.read_text() != certificate:
        return (f"the certificate stored with the run is not {pem}: the signing key was "
                f"replaced in the store (the chain was re-signed)")
    copy = folder / signing.SEAL_COPY
    if copy.is_file():
        try:
            kept = json.loads(copy.read_text())
        except ValueError:
            kept = None
        if not isinstance(kept, dict) or seal is None or kept.get("hash") != seal.hash:
            return (f"{copy} holds the run's signed final entry and the store "
                    f"{'does not' if seal is None else 'holds another one'}: the end of the "
                    f"run was removed or rewritten in the store")
    model = folder / "model.npz"
    if seal is not None and model.is_file():
        import numpy as np

        from fedsilo.core.params import digest

        with np.load(model, allow_pickle=False) as arrays:
            found = digest({k: arrays[k] for k in arrays.files})
        if found != json.loads(seal.entry).get("model"):
            return f"{model} is not the final model the audit trail seals"
    return ""


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


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _signed_facts(row: Mapping[str, Any], metric_rows: list[dict[str, Any]],
                  config: str | None) -> dict[str, Any]:
    """What an audit entry holds of a round's stored row and metrics and of the run's stored
    config: computed the same way when recording and when verifying."""
    def number(value: Any) -> float | None:
        return None if value is None else float(value)

    values = sorted([m["institution"], m["name"], float(m["value"])] for m in metric_rows)
    metrics = {"seconds": number(row["seconds"]), "clock_time": number(row["clock_time"]),
               "federated": row["federated"], "metrics": row["metrics"],
               "institutions": values}
    planned = None
    if config:
        with_run = json.loads(config).get("run")
        planned = with_run.get("rounds") if isinstance(with_run, dict) else None
    return {"metrics": _digest(audit_chain.canonical(metrics)),
            "epsilon": number(row["epsilon"]), "config": _digest(config) if config else "",
            "planned": planned}


def _facts(data: Mapping[str, Any], raw: list[dict[str, Any]],
           config: str | None) -> dict[int, dict[str, Any]]:
    """Each round's audit entry rebuilt from the rounds, participation, metrics and runs
    tables."""
    out: dict[int, dict[str, Any]] = {}
    for r in raw:
        rows = [p for p in data["participation"] if p["round"] == r["round"]]
        values = [m for m in data["institution_metrics"] if m["round"] == r["round"]]
        out[r["round"]] = {
            "round": r["round"], "version": r["version"],
            "contributors": {p["institution"]: p["update_digest"] or "" for p in
                             sorted(rows, key=lambda p: p["institution"])
                             if p["status"] == "accepted"},
            "rejected": {p["institution"]: p["reason"] for p in
                         sorted(rows, key=lambda p: p["institution"])
                         if p["status"] == "rejected"},
            "model": r["model_digest"], **_signed_facts(r, values, config)}
    return out
