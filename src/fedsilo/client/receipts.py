"""An institution's receipts: the server's signed acknowledgement of every update it accepted,
kept in a JSON-lines file of the institution's own (`fedsilo client --receipts FILE`).
`fedsilo audit verify RUN --receipts FILE` compares them with the server's audit trail."""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path

from fedsilo.core.messages import Reply
from fedsilo.core.params import digest
from fedsilo.store.disk import writing

log = logging.getLogger(__name__)


class ReceiptBook:
    """Appends each receipt to `path`, after checking it acknowledges what was sent."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        with writing(self.path.parent, "the receipts file"):
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.touch()

    def keep(self, reply: Reply, receipt: str) -> None:
        """Keep `receipt` for `reply`; one that does not name this update is logged and kept
        (it is evidence too)."""
        try:
            facts = json.loads(receipt)
        except ValueError:
            facts = None
        if not isinstance(facts, dict):
            log.warning("task %s: the server's receipt is not JSON; not kept", reply.task_id)
            return
        sent = digest(reply.update) if reply.update is not None else ""
        if facts.get("digest") != sent or facts.get("institution") != reply.client_id:
            log.warning("task %s: the server's receipt does not acknowledge the update we sent "
                        "(another digest or institution); kept as evidence", reply.task_id)
        with self._lock, self.path.open("a") as f:
            f.write(json.dumps(facts, sort_keys=True) + "\n")
