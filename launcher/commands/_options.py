"""Options shared by the job commands (`launch`, `status`, `logs`, `stop`, `list`, `watch`)."""

from __future__ import annotations

import click


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
