"""`evaplan status [JOB] [--watch] [-o json]`: phase, each rank, progress, ETA and dollars."""

from __future__ import annotations

import click

from launcher.backends.base import JobState
from launcher.commands._options import interval_option, kube_options, told_cluster
from launcher.commands.watch import follow
from launcher.monitor import Progress, fmt_duration, fmt_usd, snapshot
from launcher.service import JobService
from launcher.state import JobRecord
from planner.report import dumps_json, format_rows

# The figures of `status -o json`'s progress that are the job's cost basis, fixed at launch.
_BASIS_FIGURES = frozenset({"total_steps", "total_samples", "estimate_usd", "usd_per_node_hour", "nodes"})


def status_dict(record: JobRecord, state: JobState, prog: Progress) -> dict:
    return {
        "job": record.name,
        "backend": record.backend,
        "namespace": record.namespace,
        "phase": state.phase,
        "message": state.message,
        "activity": state.activity,
        "started_at": (state.started_at or record.started_at or record.created_at).isoformat(),
        "ranks": [r.__dict__ for r in state.ranks],
        "past_budget": prog.past_budget,
        "progress": {
            k: getattr(prog.basis if k in _BASIS_FIGURES else prog, k)
            for k in (
                "step",
                "total_steps",
                "samples_seen",
                "total_samples",
                "samples_per_s",
                "eta_s",
                "elapsed_s",
                "spent_usd",
                "projected_usd",
                "estimate_usd",
                "budget_usd",
                "usd_per_node_hour",
                "nodes",
            )
        },
    }


def render_text(record: JobRecord, state: JobState, prog: Progress) -> str:
    where = f" namespace {record.namespace}" if record.namespace else ""
    lines = [
        f"job {record.name} ({record.backend}{where}): {state.phase}"
        + (f" — {state.message}" if state.message else "")
    ]
    basis = prog.basis
    if prog.step is not None:
        pct = 100.0 * (prog.samples_seen or 0) / basis.total_samples if basis.total_samples else 0.0
        sps = f"{prog.samples_per_s:,.1f} samples/s" if prog.samples_per_s else "- samples/s"
        lines.append(
            f"progress: step {prog.step}/{basis.total_steps}, {prog.samples_seen:,.0f}/{basis.total_samples:,} "
            f"samples ({pct:.1f}%), {sps}, ETA {fmt_duration(prog.eta_s)}"
        )
    else:
        lines.append(f"progress: {state.activity or 'no metrics yet'} (0/{basis.total_steps} steps)")
    lines.append(
        f"cost: spent {fmt_usd(prog.spent_usd)} in {fmt_duration(prog.elapsed_s)} of node time "
        f"({basis.nodes} node(s) × {fmt_usd(basis.usd_per_node_hour)}/node-hour); projected {fmt_usd(prog.projected_usd)}; "
        f"estimate {fmt_usd(basis.estimate_usd)}; budget {fmt_usd(prog.budget_usd)}"
    )
    if prog.past_budget:
        lines.append(f"WARNING: {prog.past_budget}; `evaplan stop {record.name}` ends it")
    if state.ranks:
        rows = [
            {
                "rank": r.rank,
                "worker": r.name,
                "phase": r.phase,
                "reason": r.reason or "",
                "restarts": r.restarts,
                "node": r.node or "",
                "message": (r.message or "")[:120],
            }
            for r in state.ranks
        ]
        lines.append(format_rows(rows, "table").rstrip("\n"))
    return "\n".join(lines)


@click.command("status")
@click.argument("job", required=False)
@click.option("--watch", "-w", "watch", is_flag=True, help="Refresh until the job ends; enforce --max-cost.")
@interval_option(10.0, help="Seconds between refreshes with --watch.")
@click.option("-o", "--output", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@kube_options
def command(
    job: str | None, watch: bool, interval_s: float, fmt: str, kubeconfig: str | None, context: str | None
) -> None:
    """Phase, each rank (with the reason when it is not running), progress, ETA and cost of a job
    (default: the most recent), asked of the cluster it was launched on."""
    service = JobService(**told_cluster(kubeconfig, context))
    record, backend = service.watchable(job)

    current = [record]

    def show(state: JobState, prog: Progress) -> None:
        current[0] = service.remember(current[0], state)
        click.echo(
            dumps_json(status_dict(record, state, prog))
            if fmt == "json"
            else render_text(record, state, prog)
        )

    if not watch:
        show(*snapshot(backend, record))
        for line in backend.notices:
            click.echo(f"note: {line}", err=True)
        return
    follow(service, backend, record, interval_s, show)
