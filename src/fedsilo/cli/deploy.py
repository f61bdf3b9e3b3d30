"""`fedsilo provision | server | client`: the deployment commands."""

from __future__ import annotations

import argparse
import logging
import signal
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from types import FrameType
from typing import Any

import pandas as pd
from rich.console import Console

from fedsilo.errors import ConfigError, FedsiloError

log = logging.getLogger("fedsilo.cli")


def add_parsers(sub: argparse._SubParsersAction) -> None:
    prov = sub.add_parser("provision", help="create the CA and one startup kit per participant")
    prov.add_argument("project", type=Path, nargs="?", metavar="PROJECT.toml",
                      help="the consortium: server address and port, institutions, validity "
                           "(not needed with --revoke)")
    prov.add_argument("--out", type=Path, default=Path("kits"),
                      help="folder to write the CA and the kits to (default: kits)")
    prov.add_argument("--revoke", metavar="INSTITUTION",
                      help="revoke an institution's certificate in the kits under --out")
    srv = sub.add_parser("server", help="coordinate a federated run over gRPC (mutual TLS)")
    srv.add_argument("--kit", type=Path, required=True, help="the server's startup kit")
    srv.add_argument("--config", type=Path, required=True, help="RUN.toml")
    srv.add_argument("--address", help="host:port to listen on (default 0.0.0.0:<kit port>)")
    srv.add_argument("--tracker-port", type=int, default=None,
                     help="port of XGBoost's federated server, for [model] kind = 'xgboost' "
                          "(default: the server's port + 1)")
    srv.add_argument("--wait", type=float, default=300.0,
                     help="seconds to wait for institutions to join")
    srv.add_argument("--output", type=Path, help="results folder (overrides run.output_dir)")
    srv.add_argument("--resume", action="store_true",
                     help="continue the newest unfinished run of this config from its last "
                          "checkpoint (after a crash)")
    cli = sub.add_parser("client", help="take part in a run as one institution")
    cli.add_argument("--kit", type=Path, required=True, help="this institution's startup kit")
    cli.add_argument("--data", type=Path,
                     help="this institution's data: a CSV or Parquet table, an .npz (arrays x "
                          "and y), or a folder of images with one subfolder per class")
    cli.add_argument("--loader", metavar="MODULE:FUNCTION",
                     help="this institution's own loader instead: FUNCTION(name, {'path': "
                          "--data}) returns a DataFrame, arrays (x, y) or a dataset")

    cli.add_argument("--address", help="server host:port (default from the kit)")
    cli.add_argument("--name", help="claimed identity (only with --insecure)")
    cli.add_argument("--receipts", type=Path, default=None,
                     help="file to keep the server's signed receipts of our updates in "
                          "(JSON lines; default: KIT/receipts.jsonl); check them with "
                          "`fedsilo audit verify RUN --receipts FILE`")
    cli.add_argument("--give-up-after", type=float, default=None,
                     help="stop retrying after this many seconds without the server")
    for p in (srv, cli):
        p.add_argument("--insecure", action="store_true",
                       help="no TLS: for a closed test network only (prints a warning)")
        p.add_argument("--code", type=Path, action="append", default=[], metavar="DIR",
                       help="a folder of your own code (model factory, loader, loss, "
                            "metrics) to import from; repeatable (the server also imports "
                            "from its config's folder)")


def provision_cmd(args: argparse.Namespace, console: Console) -> int:
    from fedsilo.transport.grpc.provision import Project, provision, revoke

    if args.revoke:
        serial = revoke(args.out, args.revoke)
        console.print(f"revoked '{args.revoke}' (serial {serial:x}); the server kit's crl.pem "
                      f"is updated: restart the server to apply it")
        return 0
    if args.project is None:
        raise ConfigError("provision needs PROJECT.toml (or --revoke NAME)")
    project = Project.load(args.project)
    root = provision(project, args.out)
    console.print(f"provisioned '{project.name}': {root}/server and one kit for each of "
                  f"{', '.join(project.institutions)}; keep {root}/ca private")
    return 0


def _warn_insecure(console: Console) -> None:
    console.print("[bold yellow]WARNING: --insecure: no TLS, identities are NOT verified and "
                  "updates travel in clear. Use only on a closed test network.[/]")


def _on_sigterm(handler: object) -> None:
    signal.signal(signal.SIGTERM, handler)  # type: ignore[arg-type]


def server_cmd(args: argparse.Namespace, console: Console) -> int:
    from fedsilo.config.build import build_schema
    from fedsilo.config.schema import load_config
    from fedsilo.simulation.run import SimulationResult, write_results
    from fedsilo.transport.grpc.server import GrpcServerTransport
    from fedsilo.transport.grpc.tls import Gatekeeper, kit_info, server_credentials

    cfg = load_config(args.config)
    _own_code([cfg.base_dir, *args.code])
    if args.output is not None:
        cfg = cfg.model_copy(update={"run": cfg.run.model_copy(
            update={"output_dir": str(args.output)})})
    d = cfg.data
    vertical = cfg.run.mode == "vertical"
    if vertical and args.resume:
        raise ConfigError("--resume: a vertical run cannot resume; start it again")
    if not vertical and d.numeric is None and d.columns is None and d.shape is None:
        raise ConfigError("deployment: the server sees no data; declare data.numeric or "
                          "data.columns (a table), or data.shape (array data), in the run "
                          "config")
    schema = None if vertical else build_schema(cfg, pd.DataFrame(columns=d.columns or []))
    info = kit_info(args.kit)
    if args.insecure:
        _warn_insecure(console)
    gate = Gatekeeper.from_kit(args.kit, insecure=args.insecure)
    creds = None if args.insecure else server_credentials(args.kit)
    address = args.address or f"0.0.0.0:{info.get('port', 8443)}"
    trust, receipt = (None, None) if args.insecure else _witness(args.kit)
    transport = GrpcServerTransport(address, gate, creds, digests=cfg.store.enabled,
                                    trust=trust, receipt=receipt)
    console.print(f"fedsilo server '{cfg.run.name}' listening on {address} "
                  f"(port {transport.port}), {'insecure' if args.insecure else 'mutual TLS'}")
    _on_sigterm(lambda signum, frame: _raise_exit(signum, frame))
    try:
        # --resume: a missing or damaged checkpoint stops here, before waiting for anyone
        resumed = _recorder(cfg, schema, True, console, args.kit) if args.resume else None
        need = len(d.institutions) if vertical else max(cfg.strategy.min_clients, 1)
        joined = transport.wait_for_clients(len(gate.institutions), args.wait)
        missing = sorted(gate.institutions - set(joined))
        if len(joined) < need:
            raise ConfigError(f"{len(joined)} of {len(gate.institutions)} institutions joined "
                              f"within --wait {args.wait:g} s, the run needs {need} "
                              f"({'every party' if vertical else 'strategy.min_clients'}); "
                              f"missing: {', '.join(missing)}")
        console.print(f"institutions connected: {', '.join(joined)}", highlight=False)
        if missing:
            console.print(f"starting without {', '.join(missing)} (not connected within "
                          f"--wait {args.wait:g} s; they may join later rounds)",
                          highlight=False)
        if schema is None:  # vertical: every party, all at once; no round to join later
            return _serve_vertical(cfg, transport, console, args.kit)
        from fedsilo.engine.clock import WallClock
        from fedsilo.session import run_session

        recorder = resumed or _recorder(cfg, schema, False, console, args.kit)
        try:
            session = run_session(cfg, transport, schema, recorder.run_id,
                                  read={"columns": d.columns, "na_values": d.na_values},
                                  listener=lambda ev: _print_round(console, ev),
                                  timeout=cfg.run.round_timeout or 300.0,
                                  keys=_kit_keys(args.kit), recorder=recorder,
                                  resume=args.resume, clock=WallClock(),  # real time
                                  trees=_trees(args, info, transport.port))
        except FedsiloError:  # a refused run is over, not resumable (a signal or crash is)
            recorder.finish("failed")
            raise
        result = SimulationResult(cfg, session.history, None, session.preprocessor.feature_names)
        write_results(result, recorder.folder)
        recorder.finish()  # "finished" only once the model and results are on disk
        console.print(f"results: {result.output_dir}")
        return 0
    except SystemExit as e:
        console.print(f"server stopping on signal ({e.code})")
        return 143
    finally:
        transport.close()


def _serve_vertical(cfg: Any, transport: Any, console: Console, kit: Path) -> int:
    """A vertical run: the server relays the parties' sealed messages and, for Hetero-LR, is
    the arbiter; the label holder's metrics go to the results folder and the run store."""
    from fedsilo.config.vertical import open_spec, vertical_event
    from fedsilo.engine.vertical import run_vertical_session
    from fedsilo.evaluation.metrics import PRIMARY
    from fedsilo.simulation.vertical import record_vertical
    from fedsilo.store.recorder import start_run

    metric = PRIMARY[cfg.data.task]
    recorder = start_run(cfg, metric, kit)
    try:
        outcome = run_vertical_session(open_spec(cfg), transport, recorder.run_id,
                                       timeout=cfg.run.round_timeout or 300.0,
                                       read={"columns": cfg.data.columns,
                                             "na_values": cfg.data.na_values})
    except Exception:  # a vertical run cannot resume: any end before the results is a failure
        recorder.finish("failed")
        raise
    comparison = {"metric": metric, "shared_rows": outcome.shared,
                  "references": outcome.metrics,
                  "parties": {p: {"columns": n} for p, n in outcome.columns.items()},
                  "wire_bytes": outcome.wire}
    event = vertical_event(cfg, {cfg.vertical.label_holder: outcome.metrics["vertical"]},
                           outcome.seconds)
    folder = record_vertical(cfg, recorder, event, comparison)
    console.print(f"private set intersection: {outcome.shared} shared rows with a label",
                  highlight=False)
    for label, metrics in outcome.metrics.items():
        console.print(f"{label}: {metric} {metrics.get(metric, float('nan')):.4f}",
                      highlight=False)
    console.print(f"results: {folder}")
    return 0


def _witness(kit: Path) -> tuple[Any, Any]:
    """What the server checks and signs for each update: the project CA (institutions'
    signatures) and its receipts, signed with the kit's server.key."""
    from fedsilo.aggregation.secure.identity import Trust
    from fedsilo.store.contributions import make_receipt
    from fedsilo.store.signing import kit_signer

    signer = kit_signer(kit)
    if signer is None:
        raise ConfigError(f"server kit {kit}: no server.key / server.pem to sign receipts")
    trust = Trust((Path(kit) / "ca.pem").read_bytes())
    return trust, lambda run, rnd, who, sha: make_receipt(signer, run, rnd, who, sha)


def _recorder(cfg: Any, schema: Any, resume: bool, console: Console, kit: Path) -> Any:
    """A new run's recorder, or (--resume) the newest unfinished run's, its checkpoint read
    (and checked against the signed audit trail); the trail is signed with the kit's
    server.key.

    Raises:
        ConfigError: --resume finds no unfinished run, or its checkpoint is missing or
            damaged (the message names the file and what to do; nothing is deleted).
    """
    from fedsilo.store.recorder import start_run, unfinished_run

    if not resume:
        return start_run(cfg, cfg.primary_metric(), kit)
    recorder = unfinished_run(cfg, kit)
    console.print(f"resuming run {recorder.run_id} after round {recorder.resume_point().round}")
    return recorder


def _kit_keys(kit: Path) -> dict[str, bytes]:
    """A kit's identity material (client.key, client.pem, ca.pem): it signs and checks
    updates, SecAgg+ keys and CKKS packages. CKKS keys are made per round by an institution;
    a CKKS key file an old kit still holds is not read, and its keeper is told to delete it."""
    from fedsilo.aggregation.secure.identity import kit_keys

    for stale in sorted(Path(kit).glob("ckks.*")):
        log.warning("%s: not used (CKKS keys are now made per round by the institutions); "
                    "delete it", stale)
    return kit_keys(kit)


def _raise_exit(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(signum)


def _print_round(console: Console, ev: object) -> None:
    from fedsilo.engine.events import RoundEvent

    assert isinstance(ev, RoundEvent)
    if "aborted" in ev.metrics:
        console.print(f"round {ev.round} aborted, model unchanged: {ev.metrics['aborted']}",
                      highlight=False)
        return
    shown = ", ".join(f"{k} {v:.4f}" for k, v in ev.federated.items()
                      if k in ("accuracy", "rmse", "log_loss"))
    dropped = f"; rejected {dict(ev.rejected)}" if ev.rejected else ""
    epsilon = ev.metrics.get("aggregator", {}).get("epsilon")
    if epsilon is not None:
        shown += f", ε {epsilon:.3g}"
    console.print(f"round {ev.round}: {len(ev.participants)} institutions, {shown}, "
                  f"{ev.seconds:.2f} s{dropped}", highlight=False)


def _trees(args: argparse.Namespace, info: Mapping[str, Any], port: int) -> Any:
    """Where XGBoost's tracker listens for a trees run: the kit's server name, and its
    mutual TLS with the kit's key, certificate and CA (none only with --insecure)."""
    from fedsilo.session import Trees
    from fedsilo.trees.xgb import TrackerTls

    kit = Path(args.kit)
    tls = None if args.insecure else TrackerTls(str(kit / "server.key"),
                                                str(kit / "server.pem"), str(kit / "ca.pem"))
    return Trees(str(info["server"]), args.tracker_port or port + 1, tls)


def _own_code(folders: list[Path]) -> None:
    from fedsilo.cli.main import own_code

    for folder in folders:
        if not folder.is_dir():
            raise ConfigError(f"--code {folder}: not a folder")
        own_code(folder)


def client_cmd(args: argparse.Namespace, console: Console) -> int:
    from fedsilo.client.institution import Institution
    from fedsilo.client.policy import FILENAME as POLICY
    from fedsilo.client.policy import SitePolicy
    from fedsilo.client.receipts import ReceiptBook
    from fedsilo.data.loading import read_source
    from fedsilo.data.prepare import Table
    from fedsilo.simulation.institutions import load_with
    from fedsilo.transport.grpc.client import run_institution
    from fedsilo.transport.grpc.tls import client_credentials, kit_info

    info = kit_info(args.kit)
    name = info["name"]
    if args.insecure:
        _warn_insecure(console)
        name = args.name or name
    elif args.name and args.name != name:
        raise ConfigError(f"--name '{args.name}' differs from the kit's certificate name "
                          f"'{name}': identity comes from the certificate")
    if args.data is None and args.loader is None:
        raise ConfigError("give --data (a table, .npz or image folder) or --loader")
    if args.data is not None and args.loader is None and not args.data.exists():
        raise ConfigError(f"data file not found: {args.data}")
    _own_code(args.code)

    def table(read: Mapping[str, Any]) -> Table:
        if args.loader is not None:
            return load_with(args.loader, name, {"path": str(args.data) if args.data else None})
        return read_source(args.data, read.get("columns"), read.get("na_values") or ("?", ""))

    stop = threading.Event()
    _on_sigterm(lambda signum, frame: stop.set())
    address = args.address or f"{info['server']}:{info.get('port', 8443)}"
    console.print(f"institution '{name}' connecting to {address}")
    start = time.monotonic()
    policy = SitePolicy.load(args.kit / POLICY)
    console.print(f"site policy {args.kit / POLICY}: requires {policy.secure}"
                  + (f", ε ≤ {policy.max_epsilon}" if policy.max_epsilon else ""),
                  highlight=False)
    institution = Institution(name, table, keys=_kit_keys(args.kit), policy=policy,
                              insecure=args.insecure)
    book = ReceiptBook(args.receipts or args.kit / "receipts.jsonl")
    answered = run_institution(address, institution.handle,
                               None if args.insecure else client_credentials(args.kit),
                               name=name, stop=stop, give_up_after=args.give_up_after,
                               on_receipt=book.keep)
    console.print(f"institution '{name}': {answered} tasks answered in "
                  f"{time.monotonic() - start:.1f} s; done")
    return 0
