"""`evaplan list`: the jobs in the store, with live status."""

from __future__ import annotations

import click

from launcher.commands._options import format_option, kube_options, told_cluster
from launcher.monitor import fmt_usd
from launcher.service import JobService
from planner.report import format_rows


@click.command("list")
@format_option("table", "json", "csv", "markdown", "yaml")
@kube_options
def command(fmt: str, kubeconfig: str | None, context: str | None) -> None:
    """Every launched job, newest first, with its live phase, step and spend."""
    rows = []
    service = JobService(**told_cluster(kubeconfig, context))
    for row in service.list_rows():
        rec = row.record
        rows.append(
            {
                "job": rec.name,
                "backend": rec.backend,
                "namespace": rec.namespace or "",
                "phase": row.phase,
                "step": row.step,
                "spent": fmt_usd(row.spent_usd) if fmt == "table" else row.spent_usd,
                "budget": fmt_usd(rec.max_cost_usd) if fmt == "table" else rec.max_cost_usd,
                "created": rec.created_at.strftime("%Y-%m-%d %H:%M"),
            }
        )
    for warning in service.warnings:
        click.echo(f"warning: {warning}", err=True)
    if not rows and fmt == "table":
        click.echo("no jobs (launch one with `evaplan launch`)")
        return
    click.echo(format_rows(rows, fmt), nl=False)
