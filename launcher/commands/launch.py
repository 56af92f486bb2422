"""`evaplan launch`: render (or take a rendered bundle), preflight, server-side dry run, create
in order; remember the job in the local store.

    evaplan launch bundles/eva8b                                   # a bundle from `evaplan render`
    evaplan launch --model eva-clip-8b --hardware h100-sxm --gpus 64 --offering aws-p5 \\
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

from launcher.backends.base import TERMINAL_PHASES, JobState, get_backend, load_bundle
from launcher.commands import render as render_cmd
from launcher.commands._options import kube_options
from launcher.monitor import cost_basis, elapsed_s, fmt_usd
from launcher.state import JobRecord, JobStore, StoreError, state_dir, utcnow
from planner.errors import EvaplanError, RuntimeFailure

# The image of a local run is never pulled (torchrun runs this checkout's evaclip): a placeholder.
LOCAL_IMAGE = "evaclip:local"
LOCAL_HARDWARE = (
    "cpu"  # profiles/hardware/cpu.yaml: this kind of machine, measured by benchmarks/measure_cpu.py
)
LOCAL_RANKS = 2  # two CPU ranks (gloo): the smallest world that exercises every ZeRO collective
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
    type=click.Choice(["kubernetes", "local"]),
    default="kubernetes",
    show_default=True,
    help="Where to run: a Kubernetes cluster, or torchrun on this machine.",
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
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Budget in USD: `status --watch` and `evaplan watch` stop the job when spend or projected spend passes it.",
)
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
    given = {k: v for k, v in render_kw.items() if _given(ctx, k)}
    if pricing is not None and bundle_dir is None:
        given["pricing"] = pricing
    bundle = None
    if bundle_dir is not None:
        extra = sorted(k for k in given if k != "namespace")
        if extra:
            flags = ", ".join("--" + k.replace("_", "-").removesuffix("-name") for k in extra)
            raise EvaplanError(
                f"a bundle folder and render flags ({flags}) were both given",
                hint="launch the bundle as rendered, or drop BUNDLE_DIR to render from the flags",
            )
        bundle = load_bundle(bundle_dir)  # before any cluster call: a wrong path fails fast
    elif not (given.get("model_name") or given.get("plan_file")):
        raise EvaplanError(
            "nothing to launch",
            hint="give a bundle folder (`evaplan render ... -o DIR`), "
            "or --model/--hardware/--gpus or --plan to render one",
        )
    if backend == "kubernetes":
        be = get_backend("kubernetes", kubeconfig=kubeconfig, context=context, namespace=namespace)
    else:
        on_command_line = ctx.get_parameter_source("kubeconfig") == ParameterSource.COMMANDLINE
        for flag, value in (
            ("--kubeconfig", kubeconfig if on_command_line else None),
            ("--context", context),
        ):
            if value:
                raise EvaplanError(f"{flag} applies to --backend kubernetes only", hint="drop it")
        be = get_backend("local")
    staged: Path | None = None  # a freshly rendered bundle, stored only once every check passed
    if bundle is None:
        staged = _render(ctx, backend, given, getattr(be, "namespace", None))
        bundle = load_bundle(staged)
    if backend == "kubernetes" and namespace and bundle.namespace != namespace:
        raise EvaplanError(
            f"the bundle renders namespace {bundle.namespace}, not {namespace}",
            hint=f"re-render with -n {namespace}, or drop -n",
        )

    basis = cost_basis(bundle, pricing)
    if max_cost_usd is not None and basis.usd_per_node_hour is None:
        raise EvaplanError(
            "--max-cost needs a price, and the plan has no offering",
            hint="render from a plan with --offering NAME",
        )
    name = bundle.job_name
    store = JobStore()
    previous = store.find(name)
    if previous is not None and not (replace or resume):
        raise EvaplanError(
            f"a job named '{name}' was launched already ({previous.backend}, {previous.created_at:%Y-%m-%d %H:%M} UTC, "
            f"last seen {previous.last_phase})",
            hint="pass --replace to start over, --resume to continue it, or render with another --job-name",
        )
    if previous is not None and previous.backend != backend:
        raise EvaplanError(
            f"job '{name}' ran on the {previous.backend} backend", hint=f"pass --backend {previous.backend}"
        )
    if previous is not None and resume and be.state(previous).phase not in TERMINAL_PHASES:
        raise EvaplanError(
            f"job '{name}' is still running", hint=f"`evaplan stop {name}` first, then --resume"
        )
    if staged is not None and (previous is None or not dry_run):
        if backend == "local" and not dry_run:
            # The backend's own checks too (paths, ranks, live processes) before the stored bundle changes.
            be.launch(bundle, job_name=name, replace=replace, resume=resume, dry_run=True)
        bundle = load_bundle(_store_bundle(staged, name))
    if dry_run:
        data = be.launch(bundle, job_name=name, replace=replace, resume=resume, dry_run=True)
        for note in data.get("notes", []):
            click.echo(f"  note: {note}")
        click.echo(f"dry run of {name} on {backend}: checks passed; nothing was created or recorded")
        for row in getattr(be, "preflight_report", []):
            click.echo(
                f"  preflight: {row['node']}: {row['free']}/{row['allocatable']} {row['resource']} free"
            )
        if data.get("dry_run_objects"):
            click.echo(f"  the API server accepted (dryRun=All): {', '.join(data['dry_run_objects'])}")
        if data.get("nproc"):
            click.echo(f"  would run torchrun with {data['nproc']} ranks in {data['work_dir']}")
        return
    if previous is not None and replace and backend == "local":
        be.stop(previous)  # its work folder is about to be removed: end the processes first
    # A resumed job's bill continues: earlier runs' billed seconds carry over.
    prior_elapsed_s = 0.0
    if previous is not None and resume:
        prior_elapsed_s = elapsed_s(
            previous,
            JobState(
                phase=previous.last_phase, started_at=previous.started_at, finished_at=previous.finished_at
            ),
        )
    keep_budget = previous is not None and resume and max_cost_usd is None
    budget = previous.max_cost_usd if keep_budget and previous is not None else max_cost_usd
    if backend == "local":
        be.set_deadline(_deadline_s(budget, basis.usd_per_node_hour, basis.nodes, prior_elapsed_s))
    data = be.launch(bundle, job_name=name, replace=replace, resume=resume)
    now = utcnow()
    record = JobRecord(
        name=name,
        backend=backend,
        bundle_dir=str(bundle.path.resolve()),
        plan={"cost_basis": basis.to_dict(), "prior_elapsed_s": prior_elapsed_s},
        estimate=bundle.plan,
        namespace=data.get("namespace") if backend == "kubernetes" else None,
        max_cost_usd=budget,
        created_at=previous.created_at if previous is not None and resume else now,
        started_at=now if backend == "local" else None,
        last_phase="Submitted",
        backend_data=data,
    )
    try:
        store.put(record)
    except StoreError as e:
        if backend != "local":
            raise
        be.stop(record)  # a local job the store cannot record would run unmanaged: end it again
        raise StoreError(f"{e.message}; the local job was stopped again", hint=e.hint) from None
    where = f"namespace {record.namespace}" if backend == "kubernetes" else data.get("work_dir")
    click.echo(f"launched {name} on {backend} ({where})")
    for note in data.get("notes", []):
        click.echo(f"  note: {note}")
    for row in getattr(be, "preflight_report", []):
        click.echo(f"  preflight: {row['node']}: {row['free']}/{row['allocatable']} {row['resource']} free")
    click.echo(
        f"  cost basis: {basis.nodes} node(s) × {fmt_usd(basis.usd_per_node_hour)}/node-hour "
        f"({basis.pricing or 'no price'}: {basis.price_source or 'the plan has no offering'}); "
        f"estimate {fmt_usd(basis.estimate_usd)}; budget {fmt_usd(record.max_cost_usd)}"
    )
    click.echo(f"  next: evaplan status {name} --watch | evaplan logs {name} -f | evaplan stop {name}")


def _given(ctx: click.Context, name: str) -> bool:
    return ctx.get_parameter_source(name) not in (None, ParameterSource.DEFAULT, ParameterSource.DEFAULT_MAP)


def _render(ctx: click.Context, backend: str, given: dict[str, Any], resolved_namespace: str | None) -> Path:
    """`evaplan render` into <state dir>/bundles/<job>, replacing an earlier bundle of that job."""
    if not given.get("image"):
        if backend == "kubernetes":
            raise EvaplanError(
                "launch renders the bundle and needs the trainer image", hint="add --image REGISTRY/IMAGE:TAG"
            )
        given["image"] = LOCAL_IMAGE
    if backend == "local" and not given.get("plan_file"):
        # On this machine the "GPUs" are CPU ranks: default to the bundled `cpu` profile with two
        # ranks (gloo), so `evaplan launch --backend local --model eva-clip-debug` runs as it reads.
        given.setdefault("hardware_name", LOCAL_HARDWARE)
        if not (given.get("gpus") or given.get("nodes")):
            given["gpus"] = LOCAL_RANKS
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
    ctx.call_on_close(lambda: shutil.rmtree(tmp, ignore_errors=True))
    ctx.invoke(render_cmd.command, out_dir=str(tmp / "bundle"), to_stdout=False, **given)
    return tmp / "bundle"


def _store_bundle(staged: Path, job: str) -> Path:
    """Move a rendered bundle to <state dir>/bundles/<job>, replacing that job's earlier bundle
    (after every check passed: a refused launch leaves the stored bundle as it was)."""
    final = state_dir() / "bundles" / job
    old = None
    try:
        if final.exists():
            old = staged.parent / "old"
            os.rename(final, old)
        os.rename(staged, final)
    except OSError as e:
        if old is not None and not final.exists():
            os.rename(old, final)  # put the earlier bundle back
        raise RuntimeFailure(
            f"cannot store the bundle at {final}: {e.strerror}", hint="check the state dir's permissions"
        ) from None
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return final


def _deadline_s(
    budget_usd: float | None, usd_per_node_hour: float | None, nodes: int, prior_elapsed_s: float
) -> float | None:
    """Seconds of run time the budget still buys: (budget − spent so far) ÷ (nodes × $/node-hour);
    None without a budget or with a zero price (nothing to guard)."""
    if budget_usd is None or not usd_per_node_hour or nodes <= 0:
        return None
    rate_usd_per_s = usd_per_node_hour * nodes / 3600.0
    return max(0.0, budget_usd / rate_usd_per_s - prior_elapsed_s)


for _opt in _RENDER_OPTIONS:
    command.params.append(_opt)
command.params.append(
    click.Option(
        ["-n", "--namespace"],
        default=None,
        help="Namespace (default: the context's, as kubectl; in-cluster: the pod's).",
    )
)
