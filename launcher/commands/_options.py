"""Options shared by several commands: --format for every command that prints results, and the
kubeconfig options of the job commands (`launch`, `status`, `logs`, `stop`, `list`, `watch`)."""

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
