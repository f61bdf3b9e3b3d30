"""Checkpoints of the server's state: the global model and everything a strategy carries
between rounds (server optimizer moments, SCAFFOLD's control variate, the adaptive clip
norm), written atomically — to a temporary file, flushed, then renamed over the previous
one — so a crash at any instant leaves the last complete round on disk.

The file is an .npz of the state's arrays plus its structure as JSON: no pickle, so loading
a checkpoint never runs code.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fedsilo.algorithms.base import ServerState
from fedsilo.errors import ConfigError
from fedsilo.optim.base import OptState
from fedsilo.store.disk import writing

FILE = "checkpoint.npz"
_TYPES: dict[str, type] = {"ServerState": ServerState, "OptState": OptState}


@dataclass(frozen=True)
class Checkpoint:
    round: int
    state: ServerState


def _encode(obj: Any, arrays: dict[str, np.ndarray]) -> Any:
    if isinstance(obj, np.ndarray):
        key = f"a{len(arrays)}"
        arrays[key] = obj
        return {"__array__": key}
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        name = type(obj).__name__
        if name not in _TYPES:
            raise ConfigError(f"checkpoint: cannot save a {name}")
        return {"__dataclass__": name, "fields": {f.name: _encode(getattr(obj, f.name), arrays)
                                                  for f in dataclasses.fields(obj)}}
    if isinstance(obj, dict):
        return {"__dict__": [[str(k), _encode(v, arrays)] for k, v in obj.items()]}
    if isinstance(obj, (list, tuple)):
        return {"__list__": [_encode(v, arrays) for v in obj]}
    if isinstance(obj, np.generic):
        return obj.item()
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise ConfigError(f"checkpoint: cannot save a value of type {type(obj).__name__}")


def _decode(obj: Any, arrays: Any) -> Any:
    if isinstance(obj, dict):
        if "__array__" in obj:
            return np.array(arrays[obj["__array__"]])
        if "__dataclass__" in obj:
            fields = {k: _decode(v, arrays) for k, v in obj["fields"].items()}
            return _TYPES[obj["__dataclass__"]](**fields)
        if "__dict__" in obj:
            return {k: _decode(v, arrays) for k, v in obj["__dict__"]}
        if "__list__" in obj:
            return [_decode(v, arrays) for v in obj["__list__"]]
    return obj


def save_checkpoint(folder: Path, round: int, state: ServerState) -> Path:
    """Write the state after `round` to folder/checkpoint.npz, atomically (on failure the
    previous checkpoint stays as it was).

    Raises:
        ConfigError: the folder cannot be written (disk full, read-only), naming the path.
    """
    arrays: dict[str, np.ndarray] = {}
    meta = json.dumps({"round": round, "state": _encode(state, arrays)})
    arrays["__meta__"] = np.frombuffer(meta.encode(), dtype=np.uint8)
    final = folder / FILE
    tmp = folder / f".{FILE}.tmp"
    try:
        with writing(final, "the checkpoint"):
            folder.mkdir(parents=True, exist_ok=True)
            with open(tmp, "wb") as f:
                np.savez(f, **arrays)  # type: ignore[arg-type]
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, final)
    except ConfigError:
        with contextlib.suppress(OSError):  # a half-written file only takes up space
            tmp.unlink(missing_ok=True)
        raise
    return final


def load_checkpoint(folder: Path) -> Checkpoint | None:
    """The last complete checkpoint in `folder`, or None if there is none.

    Raises:
        ConfigError: the file is there but cannot be read back (damaged, or not a fedsilo
            checkpoint), naming it and what to do.
    """
    path = folder / FILE
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(bytes(data["__meta__"]).decode())
            state = _decode(meta["state"], data)
            done = int(meta["round"])
        if not isinstance(state, ServerState) or done < 0:
            raise TypeError("no server state")
        state = dataclasses.replace(state, history={int(v): p for v, p in
                                                    state.history.items()})
    except Exception as e:  # any damage: truncated zip, wrong arrays, bad JSON, bad fields
        raise ConfigError(f"checkpoint {path} cannot be read ({type(e).__name__}): it is "
                          f"damaged or not a fedsilo checkpoint. Restore it from a backup, or "
                          f"start the run again without --resume (a new run; the rounds "
                          f"recorded so far stay in the store)") from None
    return Checkpoint(done, state)


class Checkpointer:
    """Saves every `every` rounds and after the last one."""

    def __init__(self, folder: Path, every: int, last: int) -> None:
        if every < 1:
            raise ConfigError(f"checkpoint_every must be >= 1, got {every}")
        self.folder, self.every, self.last = folder, every, last

    def due(self, round: int) -> bool:
        return round % self.every == 0 or round == self.last

    def __call__(self, round: int, state: ServerState) -> None:
        if self.due(round):
            save_checkpoint(self.folder, round, state)
