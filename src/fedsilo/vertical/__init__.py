"""Vertical federated learning: parties hold different columns of the same customers.

`psi`: private set intersection (ECDH-PSI) to align the parties' rows on a shared ID without
revealing the IDs that are not shared; `hetero_lr`: FATE-style vertical logistic and linear
regression over CKKS; `splitnn`: split learning (bottom models per party, a top model at the
label holder). docs/vertical.md states what crosses and what each party can learn.
"""

from fedsilo.vertical.psi import Alignment, PsiParty, PsiResponse, intersect, new_salt

__all__ = ["Alignment", "PsiParty", "PsiResponse", "intersect", "new_salt"]
