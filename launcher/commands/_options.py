"""Options shared by several commands: --format for every command that prints results, --data-workers
of the commands that estimate (`estimate` and, through it, `render` and `launch`; `plan`, `compare`),
--hardware/--offering of the commands that estimate one cluster and the rule that derives the one from
the other, and the kubeconfig options of the job commands (`launch`, `status`, `logs`, `stop`, `list`,
`watch`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import click
from click.core import ParameterSource

from launcher.completion import profile_names
from planner.errors import EvaplanError

if TYPE_CHECKING:
    from planner.spec import OfferingSpec

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


def hardware_option() -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """--hardware NAME (passed as `hardware_name`): optional where --offering names it."""
    return click.option(
        "--hardware",
        "hardware_name",
        default=None,
        help="Hardware profile, e.g. h100-sxm (default: the --offering's hardware).",
        shell_complete=profile_names("hardware"),
    )


def offering_option() -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """--offering NAME (passed as `offering_name`): prices the run and names its hardware."""
    return click.option(
        "--offering",
        "offering_name",
        default=None,
        help="Priced offering for cost, e.g. aws-p5; its hardware is the default of --hardware.",
        shell_complete=profile_names("offerings"),
    )


def hardware_and_offering(
    ctx: click.Context, hardware_name: str | None, offering_name: str | None, dirs: list[str]
) -> tuple[str | None, OfferingSpec | None]:
    """The hardware a one-cluster command plans on, and its offering (loaded): --hardware when given,
    else the offering's own (every offering profile names its hardware), the offering coming from the
    flag or the config file. Both given and disagreeing: one line naming each, exit code 2."""
    if not offering_name:
        return hardware_name, None
    from planner import profiles as prof

    offering = prof.load_offering(offering_name, dirs)
    if hardware_name is None or hardware_name == offering.hardware:
        return offering.hardware, offering
    from_config = ctx.get_parameter_source("offering_name") is ParameterSource.DEFAULT_MAP
    where = "the config file's offering" if from_config else "offering"
    raise EvaplanError(
        f"{where} '{offering.name}' runs on {offering.hardware}, not on --hardware {hardware_name}",
        hint=f"drop --hardware (the offering names it), or pick an offering of {hardware_name} "
        "(`evaplan profiles list --kind offerings`)",
    )


def offering_filter_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """--vendor / --gpu / --provider: narrow `--offering all` or a pattern (planner.catalog); alone,
    they narrow every offering."""
    f = click.option(
        "--provider", default=None, help="Only offerings of this provider (any case), e.g. AWS, Azure."
    )(f)
    f = click.option(
        "--gpu",
        default=None,
        help="Only offerings of this hardware profile or pattern, e.g. h100-sxm, 'mi3*'.",
    )(f)
    f = click.option(
        "--vendor",
        type=click.Choice(["nvidia", "amd"]),
        default=None,
        help="Only offerings of this GPU vendor.",
    )(f)
    return f


OFFERING_SET_HELP = (
    "`all`, a shell-style pattern ('aws-*', '*-mi300x') narrowed by --vendor/--gpu/--provider/--pricing"
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
