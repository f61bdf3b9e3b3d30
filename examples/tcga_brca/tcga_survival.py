"""TCGA-BRCA survival across six regions (FLamby's Fed-TCGA-BRCA): the example's own data
loader, Cox loss and C-index, named by import path in tcga_brca.toml.

Survival labels are two numbers (time, event); fedsilo's regression target is one. The
loader encodes both in one signed label, `y = +(T + 1)` for an observed death and
`y = -(T + 1)` for a censored patient (`scale_target = false` keeps it as is), and the loss
and the metric decode it. The data is not shipped (GDC terms): see README.md for where the
loader looks.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

# FLamby's client index (train_test_split.csv, fold2) -> institution name
REGIONS = {"northeast": 0, "south": 1, "west": 2, "midwest": 3, "europe": 4, "canada": 5}
ENV = "TCGA_BRCA_DIR"  # a folder holding FLamby's brca.csv and train_test_split.csv


def data_folder(folder: str = "data") -> Path:
    """Where the CSVs are: $TCGA_BRCA_DIR, else `folder` beside this file."""
    return Path(os.environ.get(ENV) or Path(__file__).resolve().parent / folder)


def encode(time: np.ndarray, event: np.ndarray) -> np.ndarray:
    """One signed label per patient: +(T + 1) for a death, -(T + 1) when censored."""
    magnitude = np.asarray(time, np.float64) + 1.0
    return np.where(np.asarray(event) > 0, magnitude, -magnitude)


def decode(y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(time in days, event 0/1) from the signed label."""
    y = np.asarray(y, np.float64).reshape(-1)
    return np.abs(y) - 1.0, (y > 0).astype(np.int64)


def load(name: str, args: dict[str, Any]) -> pd.DataFrame:
    """Institution `name`'s patients: the 39 covariates and the signed label `y`."""
    folder = data_folder(str(args.get("folder", "data")))
    brca = pd.read_csv(folder / "brca.csv")
    split = pd.read_csv(folder / "train_test_split.csv")
    client = split["fold2"].str.rsplit("_", n=1).str[1].astype(int)
    pids = set(split.loc[client == REGIONS[name], "pid"])
    rows = brca[brca["pid"].isin(pids)]
    out = rows.drop(columns=["pid", "E", "T"]).astype(np.float64)
    out["y"] = encode(rows["T"].to_numpy(), rows["E"].to_numpy())
    return out.reset_index(drop=True)


def cox_loss(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Negative Cox partial log-likelihood (Breslow), averaged over the batch as FLamby's
    BaselineLoss: for each death i, log sum over patients still at risk (time >= T_i) of
    exp(score) minus score_i."""
    scores = outputs.reshape(-1)
    time = targets.abs() - 1.0
    event = (targets > 0).to(scores.dtype)
    order = torch.argsort(time, descending=True, stable=True)
    s, e = scores[order], event[order]
    at_risk = torch.logcumsumexp(s, dim=0)  # patients sorted by decreasing time
    return ((at_risk - s) * e).mean()


def c_index(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Harrell's concordance index of risk scores (higher = earlier death), as lifelines'
    `concordance_index(T, -score, E)`: over pairs where the earlier time is a death, the
    share the model orders right (ties in score count half). No comparable pair (a test split
    without deaths): 0.5, no information."""
    time, event = decode(y_true)
    score = np.asarray(y_pred, np.float64).reshape(-1)
    earlier = (time[:, None] < time[None, :]) & (event[:, None] == 1)
    pairs = int(earlier.sum())
    if pairs == 0:
        return 0.5
    diff = score[:, None] - score[None, :]
    right = float(((diff > 0) & earlier).sum()) + 0.5 * float(((diff == 0) & earlier).sum())
    return right / pairs
