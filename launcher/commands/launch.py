"""`evaplan launch`: render (or take a rendered bundle), preflight, server-side dry run, create
in order; remember the job in the local store.

    evaplan launch bundles/eva8b                                   # a bundle from `evaplan render`
    evaplan launch --model eva-clip-8b --offering aws-p5 --gpus 64 \\
        --image ghcr.io/acme/evaclip:1.0 --flavor jobset --max-cost 5000   # render, then launch
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource

from launcher.backends.base import Backend, backend_choices, backend_class, backend_help, load_bundle
from launcher.bundle import SLURM_FLAVOR, Bundle
from launcher.commands import render as render_cmd
from launcher.commands._options import hardware_and_offering, kube_options, limited_float
from launcher.monitor import fmt_usd
from launcher.service import DryRunResult, JobService, LaunchRequest, LaunchResult
from launcher.state import state_dir
from planner.errors import EvaplanError, RuntimeFailure

# `evaplan render`'s flags, taken as they are except: no output flags (launch keeps the bundle in the
# state dir), --image optional (not needed locally), -n without a default (kubectl's rule: the
# context's namespace).
# --pricing is launch's own (the price the job is billed at) and is passed on to render, so the plan
# is chosen for the price it is billed at.
_RENDER_SKIP = {"out_dir", "to_stdout", "image", "namespace", "pricing"}
_RENDER_OPTIONS = [p for p in render_cmd.command.params if p.name not in _RENDER_SKIP]
_RENDER_NAMES = {p.name for p in _RENDER_OPTIONS} | {"image", "namespace"}


@click.command("launch")
@click.argument("bundle_dir", type=click.Path(file_okay=False), required=False)
@click.option(
    "--backend",
    type=click.Choice(backend_choices()),  # every module of launcher/backends that declares BACKEND
    default="kubernetes",
    show_default=True,
    help=backend_help(),  # each backend's BACKEND_RUNS, read like its name
)
@kube_options
@click.option("--image", default=None, help="Trainer image, when launch renders (required for Kubernetes).")
@click.option("--replace", is_flag=True, help="Delete a job of the same name first, then launch anew.")
@click.option(
    "--resume", is_flag=True, help="Relaunch a stopped job so the trainer resumes from its checkpoint."
)
@click.option(
    "--max-cost",
    "max_cost_usd",
    type=limited_float("usd", min_open=True),
    default=None,
    help="Budget in USD: the cluster stops the workload when its run time has cost this much "
    "(activeDeadlineSeconds); `status --watch` and `watch` also stop it on projected spend.",
)
@click.option("--force", is_flag=True, help="Accept a --max-cost below the job's own estimate.")
@click.option(
    "--pricing",
    type=click.Choice(["on_demand", "spot", "committed", "on_prem"]),
    default=None,
    help="Which of the plan's prices the job is billed at (default: the plan's first, on-demand or on-prem).",
)
@click.option(
    "--dry-run",
    is_flag=True,
    help="Every check (render, preflight, server-side dry run); nothing is created or recorded.",
)
@click.pass_context
def command(
    ctx: click.Context,
    bundle_dir: str | None,
    backend: str,
    kubeconfig: str | None,
    context: str | None,
    replace: bool,
    resume: bool,
    max_cost_usd: float | None,
    pricing: str | None,
    force: bool,
    dry_run: bool,
    **render_kw: Any,
) -> None:
    """Launch a bundle, or render one first from the same flags as `evaplan render`.

    Kubernetes: preflight (the GPU product on some node, enough free GPUs, CRDs served), a
    server-side dry run of every object, then create them in order. Local: torchrun with the
    bundle's world size on this machine, detached. The job is recorded in the job store
    ($EVAPLAN_STATE_DIR, else ~/.local/state/evaplan) for status, logs, stop and list.
    """
    if replace and resume:
        raise EvaplanError("--replace starts over and --resume continues", hint="pass one of them")
    namespace = render_kw.get("namespace")
    kind = backend_class(backend)
    given = _render_flags(ctx, kind, bundle_dir, render_kw, pricing)
    bundle = _checked_bundle(ctx, kind, backend, bundle_dir, given)
    if kind.refuses_kube_flags:
        _refuse_kube_flags(ctx, kubeconfig, context)
        kubeconfig = None
    service = JobService()
    rendered_tmp = None
    if bundle is None:
        resolved_ns = kind.for_launch(kubeconfig=kubeconfig, context=context, namespace=namespace).namespace
        rendered_tmp = _render(ctx, kind, given, resolved_ns)
        bundle = load_bundle(rendered_tmp / "bundle")
    request = LaunchRequest(
        bundle=bundle,
        backend=backend,
        kubeconfig=kubeconfig,
        context=context,
        namespace=namespace,
        replace=replace,
        resume=resume,
        max_cost_usd=max_cost_usd,
        pricing=pricing,
        force=force,
        # A bundle rendered here is kept under the state dir only once the launch succeeded: a
        # refused launch or a dry run leaves the stored bundle of that job as it was.
        bundle_dir=state_dir() / "bundles" / bundle.job_name if rendered_tmp is not None else None,
    )
    try:
        result = service.launch(request, dry_run=dry_run)
        if rendered_tmp is not None and not dry_run:
            try:
                _keep(rendered_tmp, bundle.job_name)
            except OSError as e:
                raise RuntimeFailure(
                    f"launched {bundle.job_name}, but keeping its bundle in {state_dir() / 'bundles'} failed: {e.strerror}",
                    hint="the job runs; free space there for later `--resume`",
                ) from None
    finally:
        if rendered_tmp is not None:
            shutil.rmtree(rendered_tmp, ignore_errors=True)
    if isinstance(result, DryRunResult):
        _print_dry_run(result)
    else:
        _print_launched(result, kind, backend)


def _render_flags(
    ctx: click.Context,
    kind: type[Backend],
    bundle_dir: str | None,
    render_kw: dict[str, Any],
    pricing: str | None,
) -> dict[str, Any]:
    """The render flags launch passes on: those given, and (when it renders) the config file's
    settings of the backend's flavour and its offering."""
    given = {k: v for k, v in render_kw.items() if _given(ctx, k)}
    if bundle_dir is None:
        # The backend's flavour settings from evaplan.toml (Slurm: partition, account, work_dir, ...)
        # go into the bundle launch renders, as they do for `evaplan render`.
        for key in kind.render_config_params:
            if (
                ctx.get_parameter_source(key) == ParameterSource.DEFAULT_MAP
                and render_kw.get(key) is not None
            ):
                given.setdefault(key, render_kw[key])
    if pricing is not None and bundle_dir is None:
        given["pricing"] = pricing
    if bundle_dir is None and not kind.plans_on_this_machine and not given.get("plan_file"):
        # The config file's offering (a default, so not in `given`) prices the job and names its
        # hardware, as for `render`; a local run plans on this machine's CPU ranks instead.
        if render_kw.get("offering_name") and "offering_name" not in given:
            given["offering_name"] = render_kw["offering_name"]
    return given


def _checked_bundle(
    ctx: click.Context, kind: type[Backend], backend: str, bundle_dir: str | None, given: dict[str, Any]
) -> Bundle | None:
    """The bundle folder read and checked, or None when launch renders one (its flags checked
    before any cluster call: a wrong path or a mismatch is bad input)."""
    if bundle_dir is not None:
        extra = sorted(k for k in given if k != "namespace")
        if extra:
            flags = ", ".join("--" + k.replace("_", "-").removesuffix("-name") for k in extra)
            raise EvaplanError(
                f"a bundle folder and render flags ({flags}) were both given",
                hint="launch the bundle as rendered, or drop BUNDLE_DIR to render from the flags",
            )
        bundle = load_bundle(bundle_dir)  # before any cluster call: a wrong path fails fast
        if bundle.flavor == SLURM_FLAVOR and kind.render_flavor != SLURM_FLAVOR:
            raise EvaplanError(
                f"bundle {bundle_dir} is a Slurm batch script (--flavor slurm), not for --backend {backend}",
                hint="launch it with --backend slurm, or re-render it with a Kubernetes --flavor",
            )
        return bundle
    if not (given.get("model_name") or given.get("plan_file")):
        raise EvaplanError(
            "nothing to launch",
            hint="give a bundle folder (`evaplan render ... -o DIR`), "
            "or --model, --offering (or --hardware) and --gpus, or --plan to render one",
        )
    if not given.get("plan_file"):
        # --hardware and --offering checked before any cluster call: a mismatch is bad input.
        dirs = ctx.obj.get("profiles_dirs", []) if ctx.obj else []
        hardware_and_offering(ctx, given.get("hardware_name"), given.get("offering_name"), dirs)
    return None


def _refuse_kube_flags(ctx: click.Context, kubeconfig: str | None, context: str | None) -> None:
    """--kubeconfig typed (not $KUBECONFIG) or --context, for a backend that reaches no cluster."""
    on_command_line = ctx.get_parameter_source("kubeconfig") == ParameterSource.COMMANDLINE
    for flag, value in (
        ("--kubeconfig", kubeconfig if on_command_line else None),
        ("--context", context),
    ):
        if value:
            raise EvaplanError(f"{flag} applies to --backend kubernetes only", hint="drop it")


def _print_preflight(rows: list[dict[str, Any]]) -> None:
    for row in rows:
        click.echo(f"  preflight: {row['node']}: {row['free']}/{row['allocatable']} {row['resource']} free")


def _print_dry_run(result: DryRunResult) -> None:
    click.echo(f"dry run of {result.job} on {result.backend}: checks passed; nothing was created or recorded")
    for line in result.notices:
        click.echo(f"  note: {line}")
    _print_preflight(result.preflight)
    if result.accepted:
        click.echo(f"  the API server accepted (dryRun=All): {', '.join(result.accepted)}")
    if result.deadline_s is not None:
        click.echo(f"  in-cluster deadline from the budget: activeDeadlineSeconds {result.deadline_s}")
    if result.nproc:
        click.echo(f"  would run torchrun with {result.nproc} ranks in {result.work_dir}")


def _print_launched(result: LaunchResult, kind: type[Backend], backend: str) -> None:
    record, basis = result.record, result.basis
    click.echo(f"launched {record.name} on {backend} ({kind.place(record)})")
    for line in result.notices:
        click.echo(f"  note: {line}")
    _print_preflight(result.preflight)
    click.echo(
        f"  cost basis: {basis.nodes} node(s) × {fmt_usd(basis.usd_per_node_hour)}/node-hour "
        f"({basis.pricing or 'no price'}: {basis.price_source or 'the plan has no offering'}); "
        f"estimate {fmt_usd(basis.estimate_usd)}; budget {fmt_usd(record.max_cost_usd)}"
    )
    if result.deadline_s is not None:
        click.echo(f"  {kind.budget_enforcement(result.deadline_s)}")
    click.echo(
        f"  next: evaplan status {record.name} --watch | evaplan logs {record.name} -f | evaplan stop {record.name}"
    )


def _given(ctx: click.Context, name: str) -> bool:
    return ctx.get_parameter_source(name) not in (None, ParameterSource.DEFAULT, ParameterSource.DEFAULT_MAP)


def _render(
    ctx: click.Context, kind: type[Backend], given: dict[str, Any], resolved_namespace: str | None
) -> Path:
    """`evaplan render` into a temporary folder under <state dir>/bundles (its `bundle` inside)."""
    kind.complete_render_flags(given)  # e.g. the flavour it runs, the image, local CPU ranks
    given.setdefault("namespace", resolved_namespace or "default")
    bundles = state_dir() / "bundles"
    try:
        bundles.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".render.", dir=bundles))
    except OSError as e:
        raise RuntimeFailure(
            f"cannot write the bundle under {bundles}: {e.strerror}",
            hint="set EVAPLAN_STATE_DIR to a writable folder with free space",
        ) from None
    try:
        options = {
            **render_cmd.render_defaults(),
            **given,
            "out_dir": str(tmp / "bundle"),
            "to_stdout": False,
        }
        render_cmd.render_bundle(ctx, dirs=ctx.obj.get("profiles_dirs", []) if ctx.obj else [], **options)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return tmp


def _keep(tmp: Path, job: str) -> Path:
    """Move a bundle rendered into `tmp` to <state dir>/bundles/<job>, replacing an earlier one
    (after the launch succeeded: a refused launch leaves the stored bundle as it was); if the move
    fails, the earlier bundle is put back."""
    bundles = tmp.parent
    final = bundles / job
    old = None
    try:
        if final.exists():
            old = Path(tempfile.mkdtemp(prefix=".old.", dir=bundles))
            os.rename(final, old / "bundle")
        os.rename(tmp / "bundle", final)
    except OSError:
        if old is not None and not final.exists():
            os.rename(old / "bundle", final)  # put the earlier bundle back
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return final


for _opt in _RENDER_OPTIONS:
    command.params.append(_opt)
command.params.append(
    click.Option(
        ["-n", "--namespace"],
        default=None,
        help="Namespace (default: the context's, as kubectl; in-cluster: the pod's).",
    )
)
