"""`fedsilo audit verify | dashboard`: looking at recorded runs."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console

if TYPE_CHECKING:
    from fedsilo.store.run_store import RunStore

DEFAULT_STORE = "results"


def add_parsers(sub: argparse._SubParsersAction) -> None:
    audit = sub.add_parser("audit", help="check a run's audit trail")
    verbs = audit.add_subparsers(dest="verb", required=True, metavar="VERB",
                                 help="what to do with the audit trail")
    verify = verbs.add_parser("verify", help="check a run's signed hash chain against its "
                                             "recorded rounds")
    verify.add_argument("run", help="the run id (its results folder's name)")
    verify.add_argument("--kit", type=Path, default=None,
                        help="a startup kit holding the project CA (ca.pem): the key that "
                             "signed the trail must be the server's, certified by that CA")
    verify.add_argument("--folder", type=Path, default=None,
                        help="the run's results folder (default: STORE/RUN when --store is a "
                             "results folder or a .db file): its audit.pem and model.npz are "
                             "checked against the trail")
    verify.add_argument("--receipts", type=Path, default=None,
                        help="an institution's receipts file (fedsilo client --receipts): "
                             "every update the server acknowledged must be in the trail")
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
    from rich.markup import escape

    from fedsilo.errors import ConfigError
    from fedsilo.store.run_store import RunStore

    ca = None
    if args.kit is not None:
        path = Path(args.kit) / "ca.pem"
        if not path.is_file():
            raise ConfigError(f"--kit {args.kit}: no ca.pem (the project CA) in it")
        ca = path.read_bytes()
    folder = args.folder if args.folder is not None else _run_folder(args.store, args.run)
    store = RunStore(args.store, create=False)
    verdict = store.verify(args.run, ca, folder)
    if verdict.ok and args.receipts is not None:
        return _check_receipts(store, args, ca, console)
    if verdict.ok:
        console.print(f"audit trail of {escape(args.run)}: OK, {verdict.rounds} rounds "
                      f"chained, {verdict.detail}", highlight=False)
        return 0
    where = f" (first bad round: {verdict.round})" if verdict.round is not None else ""
    console.print(f"[bold red]audit trail of {escape(args.run)} is BROKEN{where}:[/] "
                  f"{escape(verdict.problem)}", highlight=False)
    return 1


def _check_receipts(store: RunStore, args: argparse.Namespace, ca: bytes | None,
                    console: Console) -> int:
    """The trail (already verified) against an institution's receipts: exit 1 on any
    receipt it contradicts."""
    from rich.markup import escape

    from fedsilo.errors import ConfigError
    from fedsilo.store.contributions import read_receipts

    if not args.receipts.is_file():
        raise ConfigError(f"--receipts {args.receipts}: no such file")
    receipts = read_receipts(args.receipts.read_text().splitlines())
    problems, checked = store.check_receipts(args.run, receipts, ca)
    if not checked and not problems:
        raise ConfigError(f"--receipts {args.receipts}: no receipt of run {args.run} in it")
    for problem in problems:
        console.print(f"[bold red]receipt contradicts the trail:[/] {escape(problem)}",
                      highlight=False)
    if problems:
        return 1
    console.print(f"audit trail of {escape(args.run)}: OK, and it records all {checked} "
                  f"updates the server acknowledged in {escape(str(args.receipts))}",
                  highlight=False)
    return 0


def _run_folder(store: str, run: str) -> Path | None:
    """The run's results folder beside a store given as a folder or a .db file."""
    if "://" in store:
        return None
    path = Path(store)
    base = path if path.is_dir() else path.parent
    folder = base / run
    return folder if folder.is_dir() and folder.resolve().parent == base.resolve() else None


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
