"""`evaplan stop [JOB]`: SIGTERM so the trainer checkpoints; delete the job's objects."""

from __future__ import annotations

import click

from launcher.backends.base import TERMINAL_PHASES
from launcher.commands._options import job_and_backend
from launcher.state import utcnow


@click.command("stop")
@click.argument("job", required=False)
def command(job: str | None) -> None:
    """Stop a job (default: the most recent). Kubernetes: delete its objects with foreground
    propagation (pods get SIGTERM and their grace period). Local: SIGTERM to the process group,
    then wait for the trainer's checkpoint and exit."""
    store, record, backend = job_and_backend(job)
    if record.backend == "local":
        state = backend.state(record)
        if state.phase in TERMINAL_PHASES:
            # Nothing of it runs (the local backend looks at the live processes): nothing to signal.
            store.remember(
                record.with_(last_phase=state.phase, finished_at=record.finished_at or state.finished_at)
            )
            click.echo(f"{record.name} already ended ({state.phase}); nothing to stop")
            return
        click.echo(
            f"stopping {record.name}: SIGTERM to each of its processes; waiting for the checkpoint and exit",
            err=True,
        )
    backend.stop(record)
    store.put(record.with_(last_phase="Stopped", finished_at=record.finished_at or utcnow()))
    click.echo(f"stopped {record.name} ({record.backend})")
