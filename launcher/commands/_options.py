"""Options shared by several commands: --format for every command that prints results, --data-workers
of the commands that estimate (`estimate` and, through it, `render` and `launch`; `plan`, `compare`),
--hardware/--offering of the commands that estimate one cluster and the rule that derives the one from
the other, the kubeconfig options of the job commands (`launch`, `status`, `logs`, `stop`, `list`,
`watch`), the slurm flavour's options of `render`, and the finite-number types of every float option."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import click
from click.core import ParameterSource

from launcher.completion import profile_names
from planner.errors import EvaplanError

if TYPE_CHECKING:
    from planner.spec import OfferingSpec

from planner.limits import LIMITS


def profiles_dirs(ctx: click.Context) -> list[str]:
    """The extra profile folders of the root group (--profiles-dir and the config file); none when a
    command runs without the group (a test invoking it directly)."""
    return ctx.obj.get("profiles_dirs", []) if ctx.obj else []


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
        # 256: above any host's cores per GPU (2 × 192-core EPYC over 8 GPUs is 48); more overflowed.
        type=click.IntRange(1, 256),
        default=None,
        help="DataLoader worker processes per GPU: the data-loading floor of the estimate and what `render` "
        "gives each rank for WebDataset shards (default: 4, OpenCLIP's; up to the host cores per GPU).",
    )


def stack_option(help: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """--stack NAME: the software stack the step time is modelled for (planner.ops.STACKS)."""
    from planner.ops import STACKS

    return click.option("--stack", type=click.Choice(STACKS), default="eager", show_default=True, help=help)


def attention_option() -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """--attention NAME: the attention kernel the step time and memory are modelled for."""
    from planner.ops import ATTENTION_KERNELS

    return click.option(
        "--attention",
        type=click.Choice(ATTENTION_KERNELS),
        default="flash",
        show_default=True,
        help="Attention kernel.",
    )


def optimizer_impl_option() -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """--optimizer-impl NAME: how the amp stack's torch AdamW runs (planner.ops prices each)."""
    from planner.ops import DEFAULT_OPTIMIZER_IMPL, OPTIMIZER_IMPLS

    return click.option(
        "--optimizer-impl",
        type=click.Choice(OPTIMIZER_IMPLS),
        default=None,
        help="How the amp stack's torch AdamW runs: fused (fused=True), foreach (torch >= 2.0's default) "
        f"or single_tensor (torch <= 1.13's per-tensor loop) (default: {DEFAULT_OPTIMIZER_IMPL}; the other "
        "stacks step their own fused optimizers).",
    )


def plot_option(help: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """--plot FILE (passed as `plot_path`): the PNG a command draws its figures into."""
    return click.option("--plot", "plot_path", type=click.Path(dir_okay=False), default=None, help=help)


def hardware_option() -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """--hardware NAME (passed as `hardware_name`): optional where --offering names it."""
    return _profile_option(
        "--hardware", "hardware", help="Hardware profile, e.g. h100-sxm (default: the --offering's hardware)."
    )


def offering_option() -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """--offering NAME (passed as `offering_name`): prices the run and names its hardware."""
    return _profile_option(
        "--offering",
        "offerings",
        help="Priced offering for cost, e.g. aws-p5; its hardware is the default of --hardware.",
    )


def _profile_option(flag: str, kind: str, *, help: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """One profile of `kind` by name (passed as `<flag>_name`), completed from the profiles."""
    dest = flag.removeprefix("--") + "_name"
    return click.option(flag, dest, default=None, help=help, shell_complete=profile_names(kind))


def interval_option(default_s: float, help: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """--interval SECONDS (passed as `interval_s`) of the commands that poll a job."""
    return click.option(
        "--interval",
        "interval_s",
        type=limited_float("interval_s"),
        default=default_s,
        show_default=True,
        help=help,
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


class FiniteFloat(click.FloatRange):
    """A float option that is a real, bounded number. click's FloatRange lets `nan` through (every
    comparison with it is false) and `inf` wherever there is no upper bound; one more step of
    arithmetic (hours × $/hour, an integer count of replicas) then fails far from the flag. Here a
    non-finite value and one above the bound fail where they are parsed, in one line naming the flag."""

    def __init__(
        self,
        min: float | None = None,
        max: float | None = None,
        *,
        min_open: bool = False,
        max_open: bool = False,
        why: str | None = None,
    ) -> None:
        super().__init__(min, max, min_open=min_open, max_open=max_open)
        self.why = why
        if min is None and max is None:
            self.name = "float"  # --help's metavar: FLOAT, not FLOAT RANGE

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        number = click.FLOAT.convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value} is not a finite number", param, ctx)
        if self.why and self.max is not None and number > self.max:
            self.fail(f"{number:g} is above {self.max:g} ({self.why})", param, ctx)
        return super().convert(number, param, ctx)

    def _describe_range(self) -> str:
        # click writes an unbounded range as "x<=None" in --help; the bounds such an option has are
        # the planner's (planner.limits), which its error line names.
        if self.min is None and self.max is None:
            return ""
        return super()._describe_range()


def limited_float(name: str, *, min_open: bool = False) -> FiniteFloat:
    """A FiniteFloat over planner.limits.LIMITS[name] (the bounds the planner checks too)."""
    lo, hi, why = LIMITS[name]
    return FiniteFloat(lo, hi, min_open=min_open, why=why)


class MultiValueCommand(click.Command):
    """Lets `--hardware h100-sxm mi300x` mean `--hardware h100-sxm --hardware mi300x`: bare words after a
    value of a repeatable flag are more values of it (these commands take no positional arguments,
    so a word is never read as something else). `multi_flags`: the repeatable flags, per command."""

    multi_flags: tuple[str, ...] = ("--hardware", "--offering")

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        out: list[str] = []
        current: str | None = None
        expecting_value = False
        for a in args:
            if expecting_value:
                out.append(a)
                expecting_value = False
                continue
            if a in self.multi_flags:
                current, expecting_value = a, True
                out.append(a)
            elif a.startswith("-"):
                current = next((f for f in self.multi_flags if a.startswith(f + "=")), None)
                out.append(a)
            elif current is not None:
                out += [current, a]
            else:
                out.append(a)
        return super().parse_args(ctx, out)
