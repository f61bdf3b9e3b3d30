"""`fedsilo audit verify | dashboard`: looking at recorded runs."""

from __future__ import annotations

import argparse

from rich.console import Console

DEFAULT_STORE = "results"


def add_parsers(sub: argparse._SubParsersAction) -> None:
    audit = sub.add_parser("audit", help="check a run's audit trail")
    verbs = audit.add_subparsers(dest="verb", required=True, metavar="VERB",
                                 help="what to do with the audit trail")
    verify = verbs.add_parser("verify", help="recompute the hash chain of a run")
    verify.add_argument("run", help="the run id (its results folder's name)")
    board = sub.add_parser("dashboard", help="serve the runs dashboard on localhost")
    board.add_argument("--port", type=int, default=8050,
                       help="TCP port to serve on (default: 8050)")
    board.add_argument("--host", default="127.0.0.1",
                       help="address to bind (default: 127.0.0.1, this machine only, no "
                            "token; any other address needs a token, from "
                            "$FEDSILO_DASHBOARD_TOKEN or generated and printed)")
    for p in (verify, board):
        p.add_argument("--store", default=DEFAULT_STORE,
                       help="the run store: a results folder, a .db file or a database URL "
                            "(default: results/fedsilo.db)")


def audit_cmd(args: argparse.Namespace, console: Console) -> int:
    from fedsilo.store.run_store import RunStore

    verdict = RunStore(args.store, create=False).verify(args.run)
    if verdict.ok:
        console.print(f"audit trail of {args.run}: OK, {verdict.rounds} rounds chained")
        return 0
    console.print(f"[bold red]audit trail of {args.run} is BROKEN:[/] {verdict.problem}",
                  highlight=False)
    return 1


def dashboard_cmd(args: argparse.Namespace, console: Console) -> int:
    """Serve the dashboard. On loopback: no token. Elsewhere: a warning, and a token
    ($FEDSILO_DASHBOARD_TOKEN, never printed, or a generated one, printed in the address)."""
    import os

    from rich.markup import escape

    from fedsilo.dashboard.guard import TOKEN_ENV, is_loopback
    from fedsilo.dashboard.server import Dashboard
    from fedsilo.store.run_store import RunStore

    chosen = None if is_loopback(args.host) else os.environ.get(TOKEN_ENV) or None
    board = Dashboard(RunStore(args.store, create=False), args.host, args.port, chosen)
    if board.public:
        console.print(f"[bold yellow]WARNING: the dashboard is bound to {escape(args.host)}, "
                      f"reachable from other machines, in clear HTTP: it shows every recorded "
                      f"run to whoever has its token. Use a trusted network (or a TLS proxy)."
                      f"[/]", highlight=False)
    shown = f"{board.address}?token=${TOKEN_ENV}" if chosen else board.url
    console.print(f"fedsilo dashboard on {shown} — Ctrl-C to stop", highlight=False)
    try:
        board.serve_forever()
    except KeyboardInterrupt:
        board.stop()
    return 0
