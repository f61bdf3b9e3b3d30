"""Rich progress bars fed by round events: one bar per phase (federated, each local-only
reference, pooled), showing the latest federated metric."""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from fedsilo.engine.events import Listener, RoundEvent


class RoundProgress:
    """Use as a context manager; pass `phase` to `run_simulation`."""

    def __init__(self, metric: str, console: Console | None = None) -> None:
        self.metric = metric
        self.progress = Progress(TextColumn("{task.description:<28}"), BarColumn(),
                                 MofNCompleteColumn(), TextColumn("{task.fields[status]}"),
                                 TimeElapsedColumn(), console=console or Console(stderr=True))

    def __enter__(self) -> RoundProgress:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.__exit__(*exc)  # type: ignore[arg-type]

    def phase(self, name: str, rounds: int) -> Listener:
        task = self.progress.add_task(name, total=rounds, status="")

        def on_round(event: RoundEvent) -> None:
            status = ""
            if self.metric in event.federated:
                status = f"{self.metric} {event.federated[self.metric]:.4f}"
            epsilon = event.metrics.get("aggregator", {}).get("epsilon",
                                                              event.metrics.get("client_work", {})
                                                              .get("dp_epsilon"))
            if epsilon is not None:
                status += f"  ε {epsilon:.3g}"
            if event.rejected:
                status += f"  rejected {len(event.rejected)}"
            self.progress.update(task, completed=event.round, status=status)

        return on_round
