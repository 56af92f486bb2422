"""`evaplan logs [JOB] [-f] [--tail N] [--rank R]`: every rank's log, merged, rank-prefixed."""

from __future__ import annotations

import click

from launcher.commands._options import kube_options, told_cluster
from launcher.service import JobService
from planner.errors import RuntimeFailure


@click.command("logs")
@click.argument("job", required=False)
@click.option("-f", "--follow", is_flag=True, help="Stream new lines until the job ends (^C to leave).")
@click.option(
    "--tail", type=click.IntRange(min=0), default=None, help="Only the last N lines (per rank on Kubernetes)."
)
@click.option(
    "--rank",
    type=click.IntRange(min=0),
    default=None,
    help="Only this rank: the node rank (pod) on Kubernetes, the process rank locally.",
)
@kube_options
def command(
    job: str | None,
    follow: bool,
    tail: int | None,
    rank: int | None,
    kubeconfig: str | None,
    context: str | None,
) -> None:
    """Every rank's log merged with `[rank N]` prefixes (default job: the most recent). A stream
    that breaks off is said in the output, reopened while following a running pod, and makes the
    command exit 1."""
    backend, lines = JobService(**told_cluster(kubeconfig, context)).logs(
        job, follow=follow, tail=tail, rank=rank
    )
    for line in lines:
        prefix = f"[rank {line.rank}] " if line.rank is not None else "[launcher] "
        click.echo(prefix + line.text)
    problems = backend.log_problems
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise RuntimeFailure(
            problems[0] + more, hint="rerun `evaplan logs`; the lines above are what arrived"
        )
