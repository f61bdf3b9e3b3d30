"""`fedsilo run CONFIG.toml` | `fedsilo demo`.

Exit codes: 0 success, 2 a problem with the config or data (the message names it), 1 anything
else that stopped the run.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.markup import escape  # messages name config sections: [aggregation] is not markup

from fedsilo.cli.deploy import add_parsers as add_deploy_parsers
from fedsilo.cli.deploy import client_cmd, provision_cmd, server_cmd
from fedsilo.cli.new import add_parser as add_new_parser
from fedsilo.cli.new import new_cmd
from fedsilo.cli.ops import add_parsers as add_ops_parsers
from fedsilo.cli.ops import audit_cmd, dashboard_cmd
from fedsilo.errors import AggregationError, ConfigError, DataError, FedsiloError

if TYPE_CHECKING:
    from fedsilo.config.schema import RunConfig
    from fedsilo.simulation.run import SimulationResult

DEMO_CONFIG = Path("heart_disease") / "heart_disease.toml"


def examples_dir() -> Path:
    """The examples folder: $FEDSILO_EXAMPLES, else the one shipped inside the package.

    The package holds the demo's config and data (`fedsilo/examples/heart_disease/`), so
    `fedsilo demo` works from a wheel install in any directory; the checkout's
    `examples/heart_disease/` links to that same copy.
    """
    env = os.environ.get("FEDSILO_EXAMPLES")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[1] / "examples"


def _parser() -> argparse.ArgumentParser:
    from importlib.metadata import PackageNotFoundError, version

    try:
        release = version("fedsilo")
    except PackageNotFoundError:  # imported from a source tree that was never installed
        release = "unknown (not installed)"
    p = argparse.ArgumentParser(prog="fedsilo", description="Federated learning across "
                                "institutions: one model, no data moved.")
    p.add_argument("--version", action="version", version=f"fedsilo {release}",
                   help="print fedsilo's version and exit")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND",
                           help="what to do (`fedsilo COMMAND -h` for its options)")
    run = sub.add_parser("run", help="run a simulation described by a TOML config")
    run.add_argument("config", type=Path, metavar="CONFIG",
                     help="the run's TOML file (its relative paths are read from its folder)")
    demo = sub.add_parser("demo", help="heart disease across four hospitals, end to end")
    for q in (run, demo):
        q.add_argument("--output", type=Path, help="results folder (overrides run.output_dir)")
        q.add_argument("--quiet", action="store_true", help="no progress bars")
        q.add_argument("--rounds", type=int, help="number of rounds (overrides run.rounds)")
    add_deploy_parsers(sub)
    add_ops_parsers(sub)
    add_new_parser(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    level = logging.INFO if args.command in ("server", "client") else logging.WARNING
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    console = Console(soft_wrap=args.command in DEPLOY)  # logs: one event per line
    try:
        if args.command in DEPLOY:
            return int(DEPLOY[args.command](args, console))
        path = args.config if args.command == "run" else examples_dir() / DEMO_CONFIG
        return _run(path, args, console)
    except (ConfigError, DataError) as e:
        console.print(f"[bold red]error:[/] {escape(str(e))}", highlight=False)
        return 2
    except FedsiloError as e:
        console.print(f"[bold red]run failed ({e.code}):[/] {escape(str(e))}", highlight=False)
        return 1


DEPLOY = {"provision": provision_cmd, "server": server_cmd, "client": client_cmd,
          "audit": audit_cmd, "dashboard": dashboard_cmd, "new": new_cmd}


def _run(path: Path, args: argparse.Namespace, console: Console) -> int:
    from fedsilo.cli.progress import RoundProgress
    from fedsilo.config.schema import load_config
    from fedsilo.evaluation.report import print_comparison
    from fedsilo.simulation.run import run_simulation

    cfg = load_config(path)
    run_update = {}
    if args.output is not None:
        run_update["output_dir"] = str(args.output)
    if args.rounds is not None:
        if args.rounds < 1:
            raise ConfigError(f"--rounds must be >= 1, got {args.rounds}")
        run_update["rounds"] = args.rounds
    if run_update:
        cfg = cfg.model_copy(update={"run": cfg.run.model_copy(update=run_update)})
    own_code(cfg.base_dir)
    if cfg.run.mode == "vertical":
        return _run_vertical(cfg, console)
    metric = cfg.primary_metric()
    console.print(f"[bold]fedsilo[/] {cfg.run.name}: {len(cfg.data.institutions) or 'partitioned'}"
                  f" institutions, {cfg.strategy.name}, {cfg.model.kind or cfg.model.factory}, "
                  f"{cfg.run.rounds} rounds")
    if args.quiet or not sys.stderr.isatty():
        result = run_simulation(cfg)
    else:
        with RoundProgress(metric) as bars:
            result = run_simulation(cfg, phase=bars.phase)
    console.print(_trained(cfg, result, metric), highlight=False)
    if result.comparison is not None:
        print_comparison(result.comparison, console)
    console.print(f"results: {result.output_dir}")
    return 0


def _run_vertical(cfg: RunConfig, console: Console) -> int:
    """A vertical run: the PSI, the protocol, and the label holder alone / vertical /
    pooled table."""
    from rich.table import Table

    from fedsilo.simulation.vertical import run_vertical

    assert cfg.vertical is not None
    console.print(f"[bold]fedsilo[/] {cfg.run.name}: vertical, {len(cfg.data.institutions)} "
                  f"parties, {cfg.model.kind}, label holder {cfg.vertical.label_holder}")
    result = run_vertical(cfg)
    for name, party in result.parties.items():
        console.print(f"  {name}: {party['rows']} rows, columns {', '.join(party['columns'])}",
                      highlight=False)
    console.print(f"private set intersection: {result.shared} shared rows with a label "
                  f"(no party learns another's other IDs)", highlight=False)
    table = Table(title=f"{result.metric} on the held-out shared rows")
    table.add_column("model")
    table.add_column(result.metric, justify="right")
    for label, metrics in result.metrics.items():
        table.add_row(label, f"{metrics[result.metric]:.4f}")
    console.print(table)
    if result.wire:
        console.print("between the parties: " + ", ".join(
            f"{kind} {n:,} bytes" for kind, n in sorted(result.wire.items())), highlight=False)
    console.print(f"results: {result.output_dir}")
    return 0


def own_code(folder: Path) -> None:
    """Let a run import the modules in `folder` (its model factory, loader, loss, metrics),
    as `flwr run` does with an app's folder: the config's folder for `fedsilo run`, the
    folders an institution names with `fedsilo client --code`."""
    path = str(Path(folder).resolve())
    if path not in sys.path:
        sys.path.insert(0, path)


def _trained(cfg: RunConfig, result: SimulationResult, metric: str) -> str:
    """One line on what the federated run did: its metric, and why it stopped early if so."""
    if metric not in result.final:
        raise AggregationError(f"no institution could evaluate the final model ({metric}); "
                               f"see the warnings above")
    value = f"federated {metric} {result.final[metric]:.4f} (weighted by test rows)"
    planned = cfg.run.rounds
    done = len(result.history.events)
    if cfg.run.mode == "async":
        return f"{value} after {done} model versions"
    if done >= planned:
        return f"{value} after {planned} rounds"
    p = cfg.privacy
    return (f"{value} after {done} of {planned} planned rounds: the privacy budget "
            f"(ε ≤ {p.target_epsilon} at δ = {p.delta}) allows no more")


if __name__ == "__main__":
    sys.exit(main())
