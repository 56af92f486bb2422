"""`evaplan stop [JOB]`: SIGTERM so the trainer checkpoints; delete everything the job created."""

from __future__ import annotations

import click

from launcher.backends.base import TERMINAL_PHASES, backend_class
from launcher.commands._options import kube_options, told_cluster
from launcher.service import JobService


@click.command("stop")
@click.argument("job", required=False)
@kube_options
def command(job: str | None, kubeconfig: str | None, context: str | None) -> None:
    """Stop a job (default: the most recent). Kubernetes: delete every object labelled with the
    job and this store's owner id, with foreground propagation (pods get SIGTERM and their grace
    period). Local: SIGTERM to the process group, then wait for the checkpoint and exit. Slurm:
    SIGTERM to the job's steps, then scancel once it ended or its signal lead passed. A job
    that had already ended is only cleaned up."""
    service = JobService(**told_cluster(kubeconfig, context))
    record = service.store.get(job)
    to = backend_class(record.backend).stop_announcement
    if to is not None and record.last_phase not in TERMINAL_PHASES:
        click.echo(f"stopping {record.name}: SIGTERM to {to}; waiting for the checkpoint and exit", err=True)
    result = service.stop(record.name)
    removed = f"; removed {', '.join(result.removed)}" if result.removed else ""
    if result.had_finished:
        cleaned = "; deleted its objects" if backend_class(result.backend).cleans_up_finished else ""
        click.echo(
            f"{result.job} had already finished ({result.had_finished}); nothing to stop{cleaned}{removed}"
        )
    else:
        click.echo(f"stopped {result.job} ({result.backend}){removed}")
