"""`evaplan watch [JOB]`: the budget guard loop, quietly (one line per change)."""

from __future__ import annotations

from collections.abc import Callable

import click

from launcher.backends.base import Backend, JobState
from launcher.commands._options import interval_option, kube_options, told_cluster
from launcher.monitor import Progress, fmt_duration, fmt_usd, watch_loop
from launcher.service import JobService
from launcher.state import JobRecord


def follow(
    service: JobService,
    backend: Backend,
    record: JobRecord,
    interval_s: float,
    show: Callable[[JobState, Progress], None],
) -> JobState:
    """watch_loop as `status --watch` and `watch` run it: the budget guard's stop and the backend's
    notes go to stderr, so stdout keeps only what `show` prints."""
    state, _ = watch_loop(
        backend,
        record,
        interval_s=interval_s,
        show=show,
        on_budget=lambda why: click.echo(f"budget guard: {why}; stopping job {record.name}", err=True),
        on_notice=lambda line: click.echo(f"note: {line}", err=True),
        reload=service.latest,
    )
    return state


@click.command("watch")
@click.argument("job", required=False)
@interval_option(30.0, help="Seconds between checks.")
@kube_options
def command(job: str | None, interval_s: float, kubeconfig: str | None, context: str | None) -> None:
    """Follow a job until it ends, stopping it when spend or projected spend passes its --max-cost."""
    service = JobService(**told_cluster(kubeconfig, context))
    record, backend = service.watchable(job)
    last: list[str] = []
    current = [record]

    def show(state: JobState, prog: Progress) -> None:
        current[0] = service.remember(current[0], state)
        line = (
            f"{record.name}: {state.phase}, step {prog.step if prog.step is not None else '-'}/{prog.basis.total_steps}, "
            f"spent {fmt_usd(prog.spent_usd)}, projected {fmt_usd(prog.projected_usd)}, "
            f"budget {fmt_usd(prog.budget_usd)}, ETA {fmt_duration(prog.eta_s)}"
        )
        if not last or last[-1] != line:
            click.echo(line)
            last[:] = [line]  # only the latest line matters: no growth over a long watch

    state = follow(service, backend, record, interval_s, show)
    service.remember(current[0], state)
    click.echo(f"{record.name}: {state.phase}")
