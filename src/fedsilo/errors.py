"""One exception tree for fedsilo.

```
FedsiloError
├── ConfigError                  bad key, type, value, missing file in a run config
├── DataError                    missing column, empty institution, unusable data
├── ProtocolError                a message that breaks the protocol
│   ├── MalformedUpdate          wrong names, shapes, dtypes, NaN/Inf
│   ├── StaleUpdate              trained from a model version too old
│   ├── WrongRound               reply for a round that is not open
│   └── UnknownClient            reply from an institution that was not asked
├── AggregationError             an aggregate cannot be formed
│   └── SecureAggregationAborted too few survivors to unmask
├── PrivacyBudgetExhausted       the configured epsilon is spent
├── TransportError               the network failed
│   └── AuthenticationError      a peer's identity was refused
└── ClientTrainingError          local training raised inside an institution
```

Inside a process, raise these; across the network, send `Reply.error` (a code and a reason).
Every error has a stable `code` used for that purpose.
"""

from __future__ import annotations


class FedsiloError(Exception):
    """Base of every error fedsilo raises on purpose. `public`: the reason an institution may
    send out, where the message itself quotes its data (e.g. example IDs for the user at the
    console); without it the message is the reason."""

    code = "fedsilo_error"

    def __init__(self, *args: object, public: str | None = None) -> None:
        super().__init__(*args)
        self.public = public

    @property
    def reason(self) -> str:
        """What may leave the institution: `public`, else the message."""
        public = getattr(self, "public", None)  # a subclass may not call this __init__
        return public if public is not None else str(self)


class ConfigError(FedsiloError):
    code = "config_error"


class DataError(FedsiloError):
    code = "data_error"


class ProtocolError(FedsiloError):
    code = "protocol_error"


class MalformedUpdate(ProtocolError):
    code = "malformed_update"


class StaleUpdate(ProtocolError):
    code = "stale_update"


class WrongRound(ProtocolError):
    code = "wrong_round"


class UnknownClient(ProtocolError):
    code = "unknown_client"


class AggregationError(FedsiloError):
    code = "aggregation_error"


class SecureAggregationAborted(AggregationError):
    code = "secure_aggregation_aborted"


class PrivacyBudgetExhausted(FedsiloError):
    code = "privacy_budget_exhausted"


class TransportError(FedsiloError):
    code = "transport_error"


class TaskLost(TransportError):
    """A task's institution was lost while running it (a simulation's worker died) and it
    will not be answered: the round counts it as dropped, as a task past its deadline."""

    code = "task_lost"


class AuthenticationError(TransportError):
    code = "authentication_error"


class ClientTrainingError(FedsiloError):
    code = "client_training_error"
