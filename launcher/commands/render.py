"""`evaplan render`: a plan (a plan.json, or the estimate flags) → a bundle folder, or YAML on stdout.

    evaplan render --model eva-clip-8b --offering aws-p5 --gpus 64 \\
        --image ghcr.io/acme/evaclip:1.0 --flavor jobset -o bundles/eva8b
    evaplan estimate ... --format json > plan.json && evaplan render --plan plan.json --image IMG --stdout | kubectl apply -f -

Every estimate flag of `evaplan estimate` is accepted here too (the same click options).
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Any

import click
from click.core import ParameterSource

from launcher.commands import estimate as estimate_cmd
from launcher.commands._options import hardware_and_offering, limited_float, slurm_options
from planner import profiles as prof
from planner.errors import EvaplanError, InfeasibleError

# click >= 8.3 returns this marker for an option without a default (older ones return None).
_UNSET = getattr(click.core, "UNSET", None)

# The estimate command's own options, shared so both commands take exactly the same flags.
_ESTIMATE_OPTIONS = [p for p in estimate_cmd.command.params if p.name not in ("fmt", "explain")]
_ESTIMATE_NAMES = {p.name for p in _ESTIMATE_OPTIONS}


def _dirs(ctx: click.Context) -> list[str]:
    return ctx.obj.get("profiles_dirs", []) if ctx.obj else []


def _env_pairs(values: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    out = []
    for i, v in enumerate(values, 1):
        key, sep, value = v.partition("=")
        if not sep:  # not quoted: a pasted secret without its name would land in the log
            raise EvaplanError(
                f"--env entry {i} is not KEY=VALUE (it has no '=')", hint="e.g. --env NCCL_NET_GDR_LEVEL=PHB"
            )
        out.append((key, value))
    return tuple(out)


# Where the run's data and checkpoints live: names of things on the cluster, each a text option
# without a default (none: synthetic data, checkpoints on an emptyDir), in --help order.
_STORAGE_OPTIONS = (
    (
        "--s3-secret",
        "Secret with AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY [, AWS_ENDPOINT_URL_S3], as envFrom.",
    ),
    ("--checkpoint-s3-uri", "s3://bucket/prefix to upload checkpoints to and resume from."),
    (
        "--checkpoint-pvc",
        "PersistentVolumeClaim for /checkpoints, ReadWriteMany when several nodes share it (default: emptyDir).",
    ),
    (
        "--data-url",
        "WebDataset shards: s3://bucket/prefix, or a path in the image or under /data "
        "(--data-pvc); default: synthetic data.",
    ),
    (
        "--data-pvc",
        "PersistentVolumeClaim with the shards, mounted read-only at /data (then --data-url /data/...).",
    ),
    ("--nvme-host-path", "Host folder on local NVMe for offload to nvme."),
)


def storage_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """The _STORAGE_OPTIONS of render (and launch, which takes render's flags)."""
    for flag, help in reversed(_STORAGE_OPTIONS):
        f = click.option(flag, default=None, help=help)(f)
    return f


@click.command("render")
@click.option(
    "--plan",
    "plan_file",
    type=click.Path(dir_okay=False),
    default=None,
    help="A `--format json` result of estimate, plan or compare (or a bundle's plan.json) instead of "
    "the estimate flags.",
)
@click.option(
    "--pick",
    type=click.IntRange(min=1),
    default=None,
    help="With a plan result: ranked plan N (default: the chosen one); with compare: option N "
    "(default: the baseline).",
)
@click.option(
    "--image",
    default=None,
    help="Trainer image (evaclip installed), e.g. ghcr.io/acme/evaclip:1.0 (Kubernetes flavours).",
)
@click.option(
    "--flavor",
    type=click.Choice(["indexed-job", "pytorchjob", "jobset", "slurm"]),
    default="indexed-job",
    show_default=True,
    help="Kubernetes workload kind (vanilla Indexed Job, Kubeflow PyTorchJob or JobSet), or a Slurm batch script.",
)
@click.option(
    "-o",
    "--output",
    "out_dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Bundle folder to write (replaced if it is an earlier bundle).",
)
@click.option(
    "--stdout", "to_stdout", is_flag=True, help="Print manifests.yaml to stdout (for kubectl apply -f -)."
)
@click.option("--job-name", default=None, help="Job name, a DNS-1035 label (default: the model's name).")
@click.option("-n", "--namespace", default="default", show_default=True)
@click.option(
    "--image-pull-policy",
    type=click.Choice(["Always", "IfNotPresent", "Never"]),
    default="IfNotPresent",
    show_default=True,
)
@click.option("--image-pull-secret", default=None, help="Secret for a private registry.")
@click.option("--service-account", default=None)
@click.option(
    "--rdma-resource",
    default=None,
    help="RDMA device-plugin resource, e.g. rdma/rdma_shared_device_a, nvidia.com/hostdev, rdma/ib.",
)
@click.option(
    "--fabric/--no-fabric",
    default=True,
    show_default=True,
    help="Request the offering's inter-node fabric (EFA devices, RDMA NICs) and set its NCCL/libfabric env.",
)
# At most 64 RDMA devices: one per GPU of the largest node the profiles allow (gpus_per_node ≤ 64).
@click.option("--rdma-per-node", type=click.IntRange(1, 64), default=1, show_default=True)
@click.option(
    "--ipc-lock/--no-ipc-lock", default=None, help="Add the IPC_LOCK capability (default: with RDMA)."
)
@click.option("--roce/--no-roce", default=None, help="RoCE v2: NCCL_IB_GID_INDEX=3 (default: on for AMD).")
@click.option("--network-annotation", default=None, help="Multus networks for SR-IOV, e.g. sriov-a,sriov-b.")
@click.option("--socket-ifname", default=None, help="NCCL_SOCKET_IFNAME / GLOO_SOCKET_IFNAME, e.g. eth0.")
@click.option("--ib-hca", default=None, help="NCCL_IB_HCA, e.g. mlx5_0,mlx5_1.")
@click.option(
    "--nccl-debug", type=click.Choice(["VERSION", "WARN", "INFO", "TRACE"]), default="WARN", show_default=True
)
@click.option("--env", "env", multiple=True, help="Extra container environment KEY=VALUE; repeatable.")
@click.option(
    "--env-not-secret",
    "env_not_secret",
    multiple=True,
    metavar="NAME",
    help="Write --env NAME as given although it looks like a secret (a false positive); repeatable.",
)
@storage_options
@click.option(
    "--optimizer",
    type=click.Choice(["lamb", "adamw"]),
    default=None,
    help="Override the recipe's optimizer (offload needs adamw).",
)
@click.option(
    "--queue", default=None, help="Kueue LocalQueue (label kueue.x-k8s.io/queue-name; created suspended)."
)
@click.option("--priority-class", default=None, help="PriorityClass of the pods.")
@click.option(
    "--max-restarts",
    # Kubernetes' backoffLimit / maxRestarts are int32; a job restarted 10,000 times is not training.
    type=click.IntRange(0, 10_000),
    default=3,
    show_default=True,
    help="Whole-job restarts after failures (JobSet maxRestarts; × nodes pod failures for Job/PyTorchJob).",
)
@click.option("--master-port", type=click.IntRange(1, 65535), default=29500, show_default=True)
@click.option(
    "--cpu-per-node", type=click.IntRange(min=1), default=None, help="CPU cores per pod (default: derived)."
)
@click.option(
    "--checkpoint-write-gbps",
    type=limited_float("gbps"),
    default=None,
    help="GB/s a node writes its checkpoint at (default: the hardware's NVMe write).",
)
@click.option(
    "--s3-upload-gbps",
    type=limited_float("gbps"),
    default=1.0,
    show_default=True,
    help="GB/s a node uploads checkpoints to S3 at (grace period).",
)
@click.option("--comms-logger", is_flag=True, help="Enable DeepSpeed's comms logger in the run.")
@slurm_options
@click.option(
    "--rbac-subject",
    default="Group:evaplan-launchers",
    show_default=True,
    help="Who rbac.yaml grants launch/status/logs/stop to: User:NAME, Group:NAME or ServiceAccount:NAME.",
)
@click.pass_context
def command(ctx: click.Context, **kw: Any) -> None:
    """Render a bundle: ds_config.json, run_config.json, manifests.yaml, plan.json, rbac.yaml.

    The same inputs give the same bytes. With --stdout the manifests go to stdout (and the bundle
    is still written when -o is given); the sizing chain goes to stderr.
    """
    set_flags = [
        k for k in _ESTIMATE_NAMES if ctx.get_parameter_source(k) not in (None, ParameterSource.DEFAULT)
    ]
    render_bundle(ctx, dirs=_dirs(ctx), set_flags=set_flags, **kw)


def render_defaults() -> dict[str, Any]:
    """Every option of `evaplan render` at its default, by name (what a caller of
    `render_bundle` does not give)."""
    ctx = click.Context(command)
    out = {}
    for p in command.params:
        default = p.get_default(ctx)
        # click ≥ 8.3 marks "no default" as UNSET; an option left out is None, as click passes it.
        out[p.name] = p.type_cast_value(ctx, None if default is _UNSET else default)
    return out


def render_bundle(
    ctx: click.Context,
    *,
    plan_file: str | None,
    pick: int | None,
    out_dir: str | None,
    to_stdout: bool,
    env: tuple[str, ...],
    job_name: str | None,
    dirs: list[str],
    set_flags: Collection[str] = (),
    **kw: Any,
) -> None:
    """`evaplan render` as a function (`render`, `launch`): from a plan file or the estimate
    options in `kw`, then the render options in `kw`. `set_flags`: the estimate options the user
    set (refused beside --plan); `ctx` only words an offering/hardware mismatch."""
    estimate_kw = {k: kw.pop(k) for k in list(kw) if k in _ESTIMATE_NAMES}
    if not out_dir and not to_stdout:
        raise EvaplanError("nowhere to write the bundle", hint="add -o DIR, --stdout, or both")
    if plan_file:
        given = sorted(k for k in estimate_kw if k in set_flags)
        if given:
            flags = ", ".join("--" + k.replace("_", "-").removesuffix("-name") for k in given)
            raise EvaplanError(
                f"--plan and estimate flags ({flags}) were both given",
                hint="use either --plan FILE or the estimate flags",
            )
        from planner.plan_file import estimate_from_document, load_document

        est, what = estimate_from_document(load_document(plan_file), pick, plan_file, dirs)
        click.echo(f"rendering {what} of {plan_file}", err=True)
    else:
        if pick is not None:
            raise EvaplanError("--pick needs --plan FILE", hint="give a plan or compare result with --plan")
        from planner.choose import choose, fixes_for

        hardware_name, offering = hardware_and_offering(
            ctx, estimate_kw.pop("hardware_name", None), estimate_kw.pop("offering_name", None), dirs
        )
        if not estimate_kw.get("model_name") or not hardware_name:
            raise EvaplanError(
                "no plan given",
                hint="pass --plan plan.json, or --model, --offering (or --hardware) and --gpus/--nodes",
            )
        from planner.calibration import calibrated_hardware

        model = prof.load_model(estimate_kw.pop("model_name"), dirs)
        if kw.get("optimizer"):  # priced stepping what the bundle runs (render.py resolve_optimizer)
            model = model.stepping(kw["optimizer"])
        use_calibration = not estimate_kw.pop("no_calibration", False)
        hardware = calibrated_hardware(
            prof.load_hardware(hardware_name, dirs), dirs, use=use_calibration
        ).hardware
        est = choose(model, hardware, estimate_cmd.request_from(estimate_kw), offering)
        if not est.fits:
            raise InfeasibleError(est.verdict, hint=fixes_for(est))
    if not est.fits:
        raise InfeasibleError(
            f"the plan in {plan_file} does not fit: {est.verdict}", hint="re-plan before rendering"
        )

    render_estimate(est, out_dir, to_stdout, job_name, env, dirs, kw)


def render_estimate(
    est,
    out_dir: str | None,
    to_stdout: bool,
    job_name: str | None,
    env: tuple[str, ...],
    dirs: list[str],
    kw: dict,
) -> None:
    """Render one fitting Estimate into a bundle and/or stdout (`render`, `plan --render`)."""
    from launcher.bundle import write_bundle
    from launcher.render import RenderOptions, inputs_from_estimate, pod_selector, render
    from launcher.slurm_script import SCRIPT_FILE, job_dir

    opts = RenderOptions(
        job_name=job_name or est.model,
        env=_env_pairs(env),
        env_not_secret=tuple(kw.pop("env_not_secret", ())),
        **kw,
    )
    rendered = render(inputs_from_estimate(est, dirs), opts)
    # With --stdout, stdout carries only YAML; everything else goes to stderr.
    if out_dir:
        path = write_bundle(rendered, out_dir)
        click.echo(f"wrote {path}/: {', '.join(sorted([*rendered.files, 'bundle.json']))}", err=to_stdout)
    if opts.flavor == "slurm":
        click.echo(
            f"slurm job {opts.job_name} in {job_dir(opts)}: evaplan launch --backend slurm, "
            f"or copy {SCRIPT_FILE} and the configs there and sbatch it",
            err=to_stdout,
        )
    else:
        click.echo(
            f"{opts.flavor} job {opts.job_name} in namespace {opts.namespace}; its pods: "
            f"kubectl get pods -n {opts.namespace} -l {pod_selector(opts.job_name)}",
            err=to_stdout,
        )
    for line in rendered.sizing.explain():
        click.echo(f"  {line}", err=to_stdout)
    for warning in rendered.warnings:
        click.echo(f"warning: {warning}", err=True)
    if to_stdout:
        click.echo(rendered.files.get("manifests.yaml") or rendered.files[SCRIPT_FILE], nl=False)


for _opt in _ESTIMATE_OPTIONS:
    if _opt.name == "model_name":
        # Required by `estimate`, optional here: a --plan file names it.
        _opt = click.Option(
            [*_opt.opts, _opt.name], default=None, help=_opt.help, shell_complete=_opt._custom_shell_complete
        )
    command.params.append(_opt)
