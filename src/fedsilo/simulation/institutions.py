"""Turning a run config's [data] section into institution tables."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from fedsilo.config.schema import RunConfig
from fedsilo.core.rng import generator
from fedsilo.core.trainer import Trainer
from fedsilo.data import partition
from fedsilo.data.arrays import as_source
from fedsilo.data.loading import read_source, read_table
from fedsilo.data.local_data import LocalData
from fedsilo.data.prepare import Table
from fedsilo.errors import ConfigError, DataError

TrainerFactory = Callable[[LocalData], Trainer]
log = logging.getLogger(__name__)


def load_tables(cfg: RunConfig) -> dict[str, Table]:
    """One table (or array data) per institution: its own file or folder, what the run's
    loader returns for it, or a partition of one CSV."""
    d = cfg.data
    if d.loader is not None:
        return {i.name: load_with(d.loader, i.name, {
                    **d.loader_args, "path": str(cfg.resolve(i.path)) if i.path else None})
                for i in d.institutions}
    if d.institutions:
        return {i.name: read_source(cfg.resolve(str(i.path)), d.columns, d.na_values)
                for i in d.institutions}
    if d.partition is None:
        raise ConfigError("data: no source; give [[data.institutions]] (one CSV each), "
                          "[data.partition] (one CSV to split), or tables in Python")
    p = d.partition
    frame = read_table(cfg.resolve(p.path), d.columns, d.na_values)
    if p.method == "column":
        assert p.column is not None
        parts = partition.by_column(frame, p.column, p.merge)
        return {name: frame.iloc[idx].reset_index(drop=True) for name, idx in parts.items()}
    k = p.institutions or 1
    rng = generator(cfg.run.seed, "partition")
    if p.method == "dirichlet":
        if d.task == "regression":
            raise ConfigError("data.partition: method 'dirichlet' (label skew) needs a "
                              "classification task")
        if d.target not in frame.columns:
            raise DataError(f"partition: target column '{d.target}' not in {cfg.resolve(p.path)}")
        idx_list = partition.dirichlet(frame[d.target].astype(str).to_numpy(), k, p.alpha, rng)
    elif p.method == "quantity":
        idx_list = partition.quantity_skew(len(frame), k, p.alpha, rng)
    else:
        idx_list = partition.iid(len(frame), k, rng)
    width = len(str(k - 1))
    return {f"inst-{i:0{width}d}": frame.iloc[idx].reset_index(drop=True)
            for i, idx in enumerate(idx_list)}


def load_with(loader: str, name: str, args: Mapping[str, Any]) -> Table:
    """What the user's `loader` ("module.path:callable", imported, never exec'd) returns for
    institution `name`: called as `loader(name, args)`.

    Raises:
        ConfigError: the loader cannot be imported.
        DataError: it fails (its type only: the text may quote data) or returns neither a
            table nor arrays.
    """
    from fedsilo.client.user_model import import_factory

    load = import_factory(loader)
    where = f"data.loader '{loader}' for '{name}'"
    try:
        obj = load(name, dict(args))
    except Exception as e:  # the user's code: any failure is a data problem of `name`
        log.warning("%s failed: %s: %s", where, type(e).__name__, e)
        raise DataError(f"{where} failed with {type(e).__name__} (details in this "
                        f"institution's log: the text may quote data)") from None
    return as_source(obj, where)


def load_table(cfg: RunConfig, name: str) -> Table:
    """Institution `name`'s table alone, where the config gives each its own source (a
    file, or the run's loader); a partitioned CSV is read whole by `load_tables`."""
    d = cfg.data
    found = [i for i in d.institutions if i.name == name]
    if not found:
        raise DataError(f"no institution '{name}' in [[data.institutions]]")
    i = found[0]
    if d.loader is not None:
        return load_with(d.loader, name, {
            **d.loader_args, "path": str(cfg.resolve(i.path)) if i.path else None})
    return read_source(cfg.resolve(str(i.path)), d.columns, d.na_values)
