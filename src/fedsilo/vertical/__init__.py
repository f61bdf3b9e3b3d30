"""Vertical federated learning: parties hold different columns of the same customers.

`psi`: private set intersection (ECDH-PSI) to align the parties' rows on a shared ID without
revealing the IDs that are not shared.
"""

from fedsilo.vertical.psi import Alignment, PsiParty, PsiResponse, intersect, new_salt

__all__ = ["Alignment", "PsiParty", "PsiResponse", "intersect", "new_salt"]
