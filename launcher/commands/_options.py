"""Options shared by several commands: --format for every command that prints results, --data-workers
of the commands that estimate (`estimate` and, through it, `render` and `launch`; `plan`, `compare`),
the kubeconfig options of the job commands (`launch`, `status`, `logs`, `stop`, `list`, `watch`), and the
slurm flavour's options of `render`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

# What estimate, plan, compare and validate print: a table for people, the rest for machines.
REPORT_FORMATS = ("table", "json", "csv", "markdown")


def format_option(
    *choices: str, default: str = "table"
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """--format FMT (passed as `fmt`), one of `choices`."""
    return click.option("--format", "fmt", type=click.Choice(choices), default=default, show_default=True)


def data_workers_option() -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """--data-workers N: one number for the estimate's data-loading floor and the rendered job's loaders."""
    return click.option(
        "--data-workers",
        type=click.IntRange(min=1),
        default=None,
        help="DataLoader worker processes per GPU: the data-loading floor of the estimate and what `render` "
        "gives each rank for WebDataset shards (default: 4, OpenCLIP's; up to the host cores per GPU).",
    )


def kube_options(f):
    """--kubeconfig / --context, the way kubectl takes them (launch adds -n with the render flags)."""
    f = click.option("--context", default=None, help="kubeconfig context (default: current-context).")(f)
    f = click.option(
        "--kubeconfig",
        default=None,
        envvar="KUBECONFIG",
        type=click.Path(dir_okay=False),
        help="kubeconfig file (default: $KUBECONFIG, ~/.kube/config, else in-cluster config).",
    )(f)
    return f


def told_cluster(kubeconfig: str | None, context: str | None) -> dict[str, str | None]:
    """The --kubeconfig/--context the user typed on a job command, for JobService: a job goes back
    to the cluster it was launched on unless told otherwise ($KUBECONFIG alone does not move it)."""
    from click.core import ParameterSource

    ctx = click.get_current_context()
    typed = ctx.get_parameter_source("kubeconfig") == ParameterSource.COMMANDLINE
    return {"kubeconfig": kubeconfig if typed else None, "context": context}


def slurm_options(f):
    """The slurm flavour's own flags (render, launch, plan --render); partition, account, qos,
    constraint and work_dir can also come from evaplan.toml."""
    f = click.option(
        "--python",
        default="python3",
        show_default=True,
        help="Slurm: the interpreter on the nodes with evaclip installed (a command or an absolute path).",
    )(f)
    f = click.option(
        "--work-dir",
        default=None,
        help="Slurm: a folder on the cluster's shared filesystem; the job's configs, checkpoints and logs "
        "go in WORK_DIR/<job>.",
    )(f)
    f = click.option(
        "--time-limit",
        "time_limit_min",
        type=click.IntRange(min=1),
        default=None,
        help="Slurm: --time in minutes (default: the plan's wall time plus the checkpoint signal's lead).",
    )(f)
    f = click.option("--constraint", default=None, help="Slurm: node features, e.g. 'h100&ib'.")(f)
    f = click.option("--qos", default=None, help="Slurm: quality of service.")(f)
    f = click.option("--account", default=None, help="Slurm: the account the job is charged to.")(f)
    f = click.option("--partition", default=None, help="Slurm: the partition to run in.")(f)
    return f
