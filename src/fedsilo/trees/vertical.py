"""Vertical federated trees ("same customers, different columns") on XGBoost's column-split
mode (`DataSplitMode.COL`, XGBoost >= 2).

Every party holds its own columns of the same customers; one party, the *label holder*, also
holds the labels. Rows are first aligned by private set intersection (fedsilo.vertical.psi,
the label holder as hub) when the parties give their ID lists, then every party runs one
XGBoost worker (trees/processes.py, `"data_split_mode": "col"` in its job.json) on its own
columns, joined by XGBoost's federated server (trees/xgb.Tracker). The label holder is rank 0,
the others follow in the order given; the model's feature indices number the columns of the
joined table in that order (the label holder's columns first). `hist` trees.

What each party sees and holds (XGBoost 3.2's plain column-split mode, measured here; the
federated server relays all of it, in the clear without TLS):

- the label holder computes the gradient pairs from its labels and *broadcasts them to every
  party* every round (XGBoost's `ApplyWithLabels`); the base score (the label mean for
  logistic loss) travels the same way. The other parties pass no labels, but with the model
  and these gradients they can recover the labels (binary:logistic: y = p - g). This mode
  protects the *features*, not the labels.
- every party proposes its best split over its own columns; the winning split (its feature
  index and threshold) and which rows go left at each node are shared with all parties.
- so every party ends with the *same, whole* model: every tree, with every party's split
  features and thresholds and the leaf values (`VerticalModel.models` are byte-identical).
  Anyone holding the joined columns could apply it alone; no party does.
- prediction is collaborative (`predict_vertical`): each party evaluates the splits on its own
  columns, the parties allreduce the decisions, and every party ends with the predictions.

XGBoost's secure vertical mode (encrypted gradients through a processor plugin, NVFlare's) is
not used here. Not covered: a malicious party; the sizes of the ID sets (see psi.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from fedsilo.errors import DataError, FedsiloError
from fedsilo.trees.boost import free_port
from fedsilo.trees.xgb import PROCESSES, Tracker, TrackerTls, _tls_files, require_xgboost
from fedsilo.vertical.psi import intersect

T = TypeVar("T")
DEFAULT_TIMEOUT = 600.0  # a hang guard: seconds for all workers together


@dataclass(frozen=True)
class VerticalModel:
    """The result of `train_vertical`."""

    models: dict[str, bytes]      # per party: the model XGBoost left it (its JSON)
    rows: dict[str, list[int]]    # per party: its rows trained on; row k = the same customer
    order: list[str]              # the ranks: label holder first; the joined table's columns


def train_vertical(parties: Mapping[str, np.ndarray], label_holder: str, labels: np.ndarray,
                   params: Mapping[str, Any], rounds: int,
                   ids: Mapping[str, Sequence[str]] | None = None, *,
                   tls: TrackerTls | None = None,
                   keys: Mapping[str, Mapping[str, bytes]] | None = None,
                   host: str = "127.0.0.1", port: int | None = None,
                   timeout: float | None = DEFAULT_TIMEOUT) -> VerticalModel:
    """Train XGBoost across the parties' columns (XGBoost's column-split mode).

    `parties`: per party, its own columns (rows x columns, float; NaN = missing, XGBoost
    learns a default direction). `labels`: the label holder's, one per row of its table.
    `ids`: per party, the ID of each of its rows; the rows are then aligned by PSI (only the
    IDs shared by all parties train). Without `ids` the tables are taken as aligned already
    (row k of every table is the same customer). `tls` with `keys` (per party, its kit's
    ca.pem, client.key, client.pem) runs the federated server over mutual TLS.

    Raises:
        DataError: the tables, labels or IDs do not fit together, or no ID is shared.
        FedsiloError: a worker failed or gave no model within `timeout` seconds.
    """
    require_xgboost()
    order, tables = _tables(parties, label_holder)
    y = np.asarray(labels, np.float32).reshape(-1)
    if len(y) != len(tables[label_holder]):
        raise DataError(f"{len(y):,} labels for the {len(tables[label_holder]):,} rows of "
                        f"{label_holder!r}")
    rows = _align(tables, order, label_holder, ids)
    xs = {n: tables[n][rows[n]] for n in order}
    ys = {label_holder: y[rows[label_holder]]}
    models = _collective(xs, ys, order, {"params": dict(params), "rounds": int(rounds)},
                         None, tls, keys, host, port, timeout,
                         lambda folder: (folder / "model.json").read_bytes())
    return VerticalModel(models, rows, order)


def predict_vertical(models: Mapping[str, bytes], parties: Mapping[str, np.ndarray],
                     label_holder: str, *, tls: TrackerTls | None = None,
                     keys: Mapping[str, Mapping[str, bytes]] | None = None,
                     host: str = "127.0.0.1", port: int | None = None,
                     timeout: float | None = DEFAULT_TIMEOUT) -> dict[str, np.ndarray]:
    """Predict aligned rows together: each party evaluates the splits on its own columns
    (`parties`, the same columns as in training, row k = the same customer for all; align new
    rows with psi.intersect first). Returns what each party ends with: the same predictions.

    Raises:
        DataError: the tables do not fit together, or a party has no model.
        FedsiloError: a worker failed or gave no predictions within `timeout` seconds.
    """
    require_xgboost()
    order, tables = _tables(parties, label_holder)
    missing = [n for n in order if n not in models]
    if missing:
        raise DataError(f"no model for {missing}")
    _same_rows(tables)
    return _collective(tables, {}, order, {"params": {"nthread": 1}, "predict": True},
                       models, tls, keys, host, port, timeout,
                       lambda folder: np.load(folder / "predictions.npy"))


def _tables(parties: Mapping[str, np.ndarray], label_holder: str
            ) -> tuple[list[str], dict[str, np.ndarray]]:
    if label_holder not in parties:
        raise DataError(f"the label holder {label_holder!r} is not one of the parties "
                        f"{list(parties)}")
    if len(parties) < 2:
        raise DataError(f"vertical training needs at least two parties, got {len(parties)}")
    order = [label_holder, *(n for n in parties if n != label_holder)]
    tables = {n: np.asarray(parties[n], np.float32) for n in order}
    for n, x in tables.items():
        if x.ndim != 2 or x.shape[1] == 0:
            raise DataError(f"{n!r}: a table of rows x columns, got shape {x.shape}")
    return order, tables


def _same_rows(tables: Mapping[str, np.ndarray]) -> None:
    sizes = {n: len(x) for n, x in tables.items()}
    if len(set(sizes.values())) != 1:
        raise DataError(f"aligned tables must have the same rows; rows per party: {sizes} "
                        f"(give the IDs to align them by PSI)")


def _align(tables: Mapping[str, np.ndarray], order: list[str], label_holder: str,
           ids: Mapping[str, Sequence[str]] | None) -> dict[str, list[int]]:
    if ids is None:
        _same_rows(tables)
        return {n: list(range(len(tables[n]))) for n in order}
    for n in order:
        if n not in ids or len(ids[n]) != len(tables[n]):
            have = len(ids[n]) if n in ids else "no"
            raise DataError(f"{n!r}: {have} IDs for its {len(tables[n]):,} rows")
    rows = intersect({n: ids[n] for n in order}, hub=label_holder)
    if not rows[label_holder]:
        raise DataError("the parties share no ID")
    return rows


def _collective(xs: Mapping[str, np.ndarray], ys: Mapping[str, np.ndarray], order: list[str],
                job: dict[str, Any], models: Mapping[str, bytes] | None,
                tls: TrackerTls | None, keys: Mapping[str, Mapping[str, bytes]] | None,
                host: str, port: int | None, timeout: float | None,
                read: Callable[[Path], T]) -> dict[str, T]:
    """One worker per party (rank = position in `order`) across one tracker; `read` takes
    each worker's result from its folder."""
    if tls is not None and (keys is None or any(n not in keys for n in order)):
        raise DataError("XGBoost over mutual TLS needs every party's kit keys")
    port = port or free_port(host)
    limit = DEFAULT_TIMEOUT if timeout is None else timeout
    tracker = Tracker(len(order), port, tls, timeout=max(1, int(limit)))
    workers: list[_Worker] = []
    try:
        for rank, n in enumerate(order):
            spec = {**job, "address": f"{host}:{port}", "world": len(order), "rank": rank,
                    "data_split_mode": "col", "tls": None}
            workers.append(_Worker(xs[n], ys.get(n), spec,
                                   None if tls is None or keys is None else keys[n],
                                   None if models is None else models[n]))
        deadline = None if timeout is None else time.monotonic() + timeout
        return {n: w.finish(None if deadline is None else max(0.0, deadline - time.monotonic()),
                            read) for n, w in zip(order, workers)}
    finally:
        for w in workers:
            w.close()
        tracker.stop()


class _Worker:
    """One party's worker process (`python -m fedsilo.trees.processes worker DIR`), its
    columns in DIR, a folder only this user may open."""

    def __init__(self, x: np.ndarray, y: np.ndarray | None, job: dict[str, Any],
                 keys: Mapping[str, bytes] | None, model: bytes | None) -> None:
        self._folder = tempfile.TemporaryDirectory(prefix="fedsilo-vxgb-")
        self.folder = Path(self._folder.name)
        os.chmod(self.folder, 0o700)
        if y is None:  # a party without labels: XGBoost's column-split mode takes rank 0's
            np.savez(self.folder / "rows.npz", x=x)
        else:
            np.savez(self.folder / "rows.npz", x=x, y=y)
        if keys:
            job["tls"] = _tls_files(keys, self.folder)
        if model is not None:
            (self.folder / "model.json").write_bytes(model)
        (self.folder / "job.json").write_text(json.dumps(job))
        self._process = subprocess.Popen([sys.executable, "-m", PROCESSES, "worker",
                                          str(self.folder)])

    def finish(self, timeout: float | None, read: Callable[[Path], T]) -> T:
        try:
            self._process.wait(timeout)
        except subprocess.TimeoutExpired:
            raise FedsiloError(f"an XGBoost worker gave no result within {timeout} s"
                               ) from None
        error = self.folder / "error.txt"
        if self._process.returncode != 0:
            kind = error.read_text() if error.is_file() else f"exit {self._process.returncode}"
            raise FedsiloError(f"vertical XGBoost failed with {kind} (details in the "
                               f"worker's log)")
        return read(self.folder)

    def close(self) -> None:
        if self._process.poll() is None:
            self._process.terminate()
            self._process.wait()
        self._folder.cleanup()
