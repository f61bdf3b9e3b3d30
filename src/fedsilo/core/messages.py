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
class FitTask:
    """What a fit task asks: the client work to run (algorithms/registry) and the run's seed
    of training randomness."""

    work: str = "local_training"
    seed: int = 0


@dataclass(frozen=True)
class EvaluateTask:
    """What an evaluation asks: `final` on the run's last one (local fine-tuning runs then)."""

    final: bool = False


@dataclass(frozen=True)
class StageTask:
    """An aggregation layer's extra exchange: the stage's name and what it sends."""

    stage: str
    payload: Mapping[str, Any] = field(default_factory=dict)


TaskBody = FitTask | EvaluateTask | StageTask
BODIES: dict[TaskKind, type] = {TaskKind.FIT: FitTask, TaskKind.EVALUATE: EvaluateTask,
                                TaskKind.STAGE: StageTask}


@dataclass(frozen=True)
class Task:
    """Work the server asks of one institution.

    `round` is the number the task's work counts toward: the synchronous round, the secure
    FedBuff group, or for a buffered asynchronous task the institution's count of tasks (so
    each task of a run has its own id and its own randomness). `body` says what the kind of
    task asks (FitTask, EvaluateTask, StageTask; a prepare task has none); `setup` is the run
    setup an institution builds its client from (config/build.py: run_setup: how to read its
    data, the fitted preprocessing, the model, the aggregator); `config` carries the run's
    client settings ([client] epochs, lr, ..., personalisation, local DP) and `layer_config`
    what each aggregation layer's client half needs this round.
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
    body: TaskBody | None = None
    setup: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        wanted = BODIES.get(self.kind)
        if wanted is not None and not isinstance(self.body, wanted):
            if self.body is not None or wanted is StageTask:
                raise ProtocolError(f"a {self.kind.value} task carries a "
                                    f"{type(self.body).__name__}, not a {wanted.__name__}")
            object.__setattr__(self, "body", wanted())  # the defaults

    @property
    def task_id(self) -> str:
        stage = f"-{self.body.stage}" if isinstance(self.body, StageTask) else ""
        return f"{self.run_id}/{self.round}/{self.kind.value}{stage}/{self.client_id}"

    @property
    def fit(self) -> FitTask:
        assert isinstance(self.body, FitTask), f"not a fit task: {self.kind.value}"
        return self.body

    @property
    def evaluate(self) -> EvaluateTask:
        assert isinstance(self.body, EvaluateTask), f"not an evaluation: {self.kind.value}"
        return self.body

    @property
    def stage(self) -> StageTask:
        assert isinstance(self.body, StageTask), f"not a stage: {self.kind.value}"
        return self.body


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
