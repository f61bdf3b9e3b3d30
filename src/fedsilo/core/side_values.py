"""The names of the side values client works send besides the model update (SCAFFOLD's Δc_i,
FedNova's a_i): the algorithms write and read them, the aggregation layers leave them alone
(aggregation/base.py: `declare_aux`; aggregation/compress.py never sparsifies them)."""

from __future__ import annotations

CONTROL = "scaffold.c/"    # the server's c in a task, Δc_i in a reply
NOVA_TAU = "fednova.tau"   # the local work a_i in a reply

# per client work (algorithms/registry.py: CLIENT_WORKS): the prefix of the side values its
# replies carry besides the model update
AUX_PREFIXES: dict[str, str] = {"scaffold": CONTROL, "fednova": NOVA_TAU}
