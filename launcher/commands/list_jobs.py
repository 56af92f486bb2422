"""`evaplan list`: the jobs in the store, with live status."""

from __future__ import annotations

import click

from launcher.backends.base import TERMINAL_PHASES, JobState, backend_for
from launcher.monitor import compute_progress, fmt_usd, snapshot
from launcher.state import JobStore
from planner.errors import EvaplanError
from planner.report import format_rows


@click.command("list")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "json", "csv", "markdown", "yaml"]),
    default="table",
    show_default=True,
)
def command(fmt: str) -> None:
    """Every launched job, newest first, with its live phase, step and spend."""
    store = JobStore()
    rows = []
    records = store.all()
    for bad in store.skipped:
        click.echo(f"warning: skipped an unreadable job row {bad} in {store.path}", err=True)
    for rec in records:
        phase, step = rec.last_phase, None
        try:
            spent = compute_progress(
                rec,
                JobState(phase=rec.last_phase, started_at=rec.started_at, finished_at=rec.finished_at),
                [],
            ).spent_usd
        except (KeyError, TypeError, ValueError) as e:  # a row without a usable cost basis
            click.echo(
                f"warning: skipped job row {rec.name!r}: no usable cost basis ({e!r}) in {store.path}",
                err=True,
            )
            continue
        if rec.last_phase not in TERMINAL_PHASES:
            try:
                state, prog = snapshot(backend_for(rec), rec)
                phase, step, spent = state.phase, prog.step, prog.spent_usd
                if phase != rec.last_phase:
                    store.remember(rec.with_(last_phase=phase))  # a cache: a read-only store still lists
            except EvaplanError as e:
                phase = f"{rec.last_phase} (unreachable: {e.message[:60]})"
        rows.append(
            {
                "job": rec.name,
                "backend": rec.backend,
                "namespace": rec.namespace or "",
                "phase": phase,
                "step": step,
                "spent": fmt_usd(spent) if fmt == "table" else spent,
                "budget": fmt_usd(rec.max_cost_usd) if fmt == "table" else rec.max_cost_usd,
                "created": rec.created_at.strftime("%Y-%m-%d %H:%M"),
            }
        )
    if not rows and fmt == "table":
        click.echo("no jobs (launch one with `evaplan launch`)")
        return
    click.echo(format_rows(rows, fmt), nl=False)
