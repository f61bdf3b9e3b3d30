"""The run store's tables (SQLAlchemy Core), the same on SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Column, Float, Integer, MetaData, String, Table, Text

metadata = MetaData()


def size(column: Column[Any]) -> int:
    """How many characters a String column holds."""
    kind = column.type
    assert isinstance(kind, String) and kind.length is not None, column.name
    return kind.length


runs = Table(
    "runs", metadata,
    Column("run_id", String(200), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("started_at", Float, nullable=False),
    Column("finished_at", Float),
    Column("status", String(20), nullable=False),       # running | finished | failed
    Column("mode", String(10), nullable=False),
    Column("strategy", String(40), nullable=False),
    Column("metric", String(20), nullable=False),        # the primary metric
    Column("config", Text, nullable=False),              # JSON
    Column("comparison", Text),                          # JSON: local-only / federated / pooled
)

rounds = Table(
    "rounds", metadata,
    Column("run_id", String(200), primary_key=True),
    Column("round", Integer, primary_key=True),
    Column("version", Integer, nullable=False),
    Column("seconds", Float, nullable=False),
    Column("clock_time", Float),                         # simulated seconds (async simulation)
    Column("epsilon", Float),                            # privacy spent so far
    Column("federated", Text, nullable=False),           # JSON: example-weighted metrics
    Column("metrics", Text, nullable=False),             # JSON: nested by part
    Column("model_digest", String(64), nullable=False),
)

participation = Table(
    "participation", metadata,
    Column("run_id", String(200), primary_key=True),
    Column("round", Integer, primary_key=True),
    Column("institution", String(200), primary_key=True),
    Column("status", String(10), nullable=False),        # accepted | rejected
    Column("reason", Text),
    Column("update_digest", String(64)),
)

institution_metrics = Table(
    "institution_metrics", metadata,
    Column("run_id", String(200), primary_key=True),
    Column("round", Integer, primary_key=True),
    Column("institution", String(200), primary_key=True),
    Column("name", String(80), primary_key=True),
    Column("value", Float, nullable=False),
)

events = Table(
    "events", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("run_id", String(200), nullable=False, index=True),
    Column("time", Float, nullable=False),
    Column("kind", String(40), nullable=False),
    Column("message", Text, nullable=False),
)

audit = Table(
    "audit", metadata,
    Column("run_id", String(200), primary_key=True),
    Column("round", Integer, primary_key=True),
    Column("entry", Text, nullable=False),               # canonical JSON of the round
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
)

audit_keys = Table(  # the certificate of the key that signs a run's audit entries
    "audit_keys", metadata,
    Column("run_id", String(200), primary_key=True),
    Column("certificate", Text, nullable=False),         # PEM
    Column("origin", String(20), nullable=False),        # kit | simulation | store
)

audit_signatures = Table(  # the server's signature of each audit entry's hash
    "audit_signatures", metadata,
    Column("run_id", String(200), primary_key=True),
    Column("round", Integer, primary_key=True),
    Column("signature", Text, nullable=False),           # hex
)

audit_seal = Table(  # the signed final entry: how the run ended, its rounds, its final model
    "audit_seal", metadata,
    Column("run_id", String(200), primary_key=True),
    Column("entry", Text, nullable=False),
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
    Column("signature", Text, nullable=False),
)

contributions = Table(  # each accepted update's signature by the institution that sent it
    "contributions", metadata,
    Column("run_id", String(200), primary_key=True),
    Column("round", Integer, primary_key=True),
    Column("institution", String(200), primary_key=True),
    Column("signed_round", Integer, nullable=False),     # the task round it signed
    Column("signature", Text, nullable=False),           # hex
    Column("certificate", String(64), nullable=False),   # SHA-256 of the signer's PEM
)

identities = Table(  # the certificates institutions signed their updates with
    "identities", metadata,
    Column("run_id", String(200), primary_key=True),
    Column("sha256", String(64), primary_key=True),
    Column("certificate", Text, nullable=False),         # PEM
)
