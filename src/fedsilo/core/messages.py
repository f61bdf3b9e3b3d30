"""Messages between the server and institutions: frozen Task, Reply and ErrorInfo, and the
Rejection of a reply."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from fedsilo.core.params import Params, ParamSpec, digest
from fedsilo.errors import ProtocolError


class TaskKind(str, Enum):
    PREPARE = "prepare"    # share training-split statistics for federated preprocessing
    FIT = "fit"
    EVALUATE = "evaluate"
    STAGE = "stage"        # an extra exchange of an aggregation layer (e.g. secure-sum keys)


@dataclass(frozen=True)
class ReplySpec:
    """What a reply to a task may carry, known to the server only (never sent): its arrays'
    names, dtypes and shapes (-1: any length; None: any arrays) and at most `max_bytes`
    bytes in all. A transport checks an incoming manifest against it before allocating."""

    arrays: ParamSpec | None
    max_bytes: int


@dataclass(frozen=True)
class Task:
    """Work the server asks of one institution.

    `config` carries the client-work settings (work name, epochs, lr, ...); `layer_config`
    carries what each aggregation layer's client half needs this round.
    """

    run_id: str
    round: int
    model_version: int
    kind: TaskKind
    client_id: str
    params: Params
    config: Mapping[str, Any] = field(default_factory=dict)
    layer_config: Mapping[str, Any] = field(default_factory=dict)
    expects: ReplySpec | None = field(default=None, compare=False, repr=False)  # server side

    @property
    def task_id(self) -> str:
        stage = f"-{self.config['stage']}" if self.kind is TaskKind.STAGE else ""
        return f"{self.run_id}/{self.round}/{self.kind.value}{stage}/{self.client_id}"


@dataclass(frozen=True)
class ErrorInfo:
    """An error sent as data: a stable code and a human-readable reason."""

    code: str
    reason: str

    def __str__(self) -> str:
        return f"[{self.code}] {self.reason}"


@dataclass(frozen=True)
class Signed:
    """An institution's signature (hex) of an update it sent for task round `round`, and
    its certificate (PEM)."""

    signature: str
    certificate: str
    round: int = 0

    MAX_CHARS = 8192  # a certificate of a few KiB; a signature of at most 132 bytes

    @classmethod
    def of(cls, payload: Mapping[str, Any], round: int = 0) -> Signed | None:
        """The signature a reply's payload carries, or None (absent or not two short texts)."""
        raw = payload.get("signed")
        if not isinstance(raw, Mapping):
            return None
        sig, cert = raw.get("signature"), raw.get("certificate")
        if not (isinstance(sig, str) and isinstance(cert, str)
                and 0 < len(sig) <= 264 and 0 < len(cert) <= cls.MAX_CHARS):
            return None
        return cls(sig, cert, round)

    def to_payload(self) -> dict[str, Any]:
        return {"signed": {"signature": self.signature, "certificate": self.certificate}}


@dataclass(frozen=True)
class Reply:
    """An institution's answer to a Task.

    `update` is the encoded update (after the client halves of the aggregation layers) for a
    fit task, None for an evaluation or an error.
    """

    task_id: str
    client_id: str
    round: int
    model_version: int
    num_examples: int
    update: Params | None = None
    metrics: Mapping[str, float] = field(default_factory=dict)
    payload: Mapping[str, Any] = field(default_factory=dict)
    error: ErrorInfo | None = None
    digest: str = ""  # SHA-256 of `update`, when the receiving transport computed it (audit)

    @property
    def ok(self) -> bool:
        return self.error is None

    def fingerprint(self) -> str:
        """SHA-256 of the update (the audit trail's record of it): the one the receiving
        transport computed, or computed now; "" without an update."""
        if self.digest or self.update is None:
            return self.digest
        return digest(self.update)


@dataclass(frozen=True)
class Rejection:
    """Why a reply was not folded into the aggregate."""

    client_id: str
    code: str
    reason: str

    @classmethod
    def of(cls, reply: Reply, error: ProtocolError | None = None) -> Rejection:
        """From a protocol error found in `reply`, or from the error `reply` carries."""
        if error is not None:
            return cls(reply.client_id, error.code, str(error))
        assert reply.error is not None
        return cls(reply.client_id, reply.error.code, reply.error.reason)
