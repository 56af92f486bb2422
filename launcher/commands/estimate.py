"""`evaplan estimate`: memory, communication, time and cost of one EVA-CLIP run on one cluster."""

from __future__ import annotations

import click

from launcher.commands._options import (
    REPORT_FORMATS,
    FiniteFloat,
    attention_option,
    data_workers_option,
    format_option,
    hardware_and_offering,
    hardware_option,
    offering_option,
    optimizer_impl_option,
    profiles_dirs,
    stack_option,
)
from launcher.completion import profile_names
from planner import profiles as prof
from planner.calibration import CalibrationSpec, calibrated_hardware, comparison_rows, range_for
from planner.choose import DEFAULT_BATCH_TOLERANCE, Request, choose, fixes_for
from planner.errors import EvaplanError, InfeasibleError
from planner.estimate import Estimate
from planner.headroom import DEFAULT_HBM_HEADROOM_TEXT, parse_headroom
from planner.intervals import TimeRange, estimate_class, fmt_days_range, fmt_usd_range, prediction_range
from planner.report import dumps_json, format_rows
from planner.spec import PRICINGS, SEARCHED_PLAN_FIELDS
from planner.units import GIB


def _gib(x: float) -> str:
    return f"{x / GIB:,.2f} GiB"


def _bytes(x: float) -> str:
    for unit, div in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6)):
        if abs(x) >= div:
            return f"{x / div:,.2f} {unit}"
    return f"{x:,.0f} B"


def _dur(s: float) -> str:
    if s >= 86400:
        return f"{s / 86400:,.1f} days"
    if s >= 3600:
        return f"{s / 3600:,.1f} h"
    if s >= 1:
        return f"{s:,.2f} s"
    return f"{s * 1e3:,.1f} ms"


def summary_rows(e: Estimate, calibrated: bool = False) -> list[dict[str, str]]:
    """The readable report: one row per figure, grouped by section."""
    rows = [*_plan_rows(e), *_memory_rows(e), *_comm_rows(e), *_time_rows(e, calibrated), *_cost_rows(e)]
    rows.append(("verdict", "fit", e.verdict))
    for ch in e.chosen:
        rows.append(("chosen", ch.split("=", 1)[0], ch.split("=", 1)[1]))
    return [{"section": s, "figure": f, "value": v} for s, f, v in rows]


Row = tuple[str, str, str]  # section, figure, value


def _plan_rows(e: Estimate) -> list[Row]:
    p = e.plan
    return [
        ("plan", "cluster", f"{p.nodes} nodes × {p.gpus_per_node} {e.hardware} = {p.world_size} GPUs"),
        (
            "plan",
            "batch",
            f"global {p.global_batch:,} = micro-batch {p.micro_batch} × grad-accum {p.grad_accum} × {p.world_size}",
        ),
        (
            "plan",
            "ZeRO",
            f"stage {p.zero_stage}, offload optimizer {p.offload_optimizer}, param {p.offload_param}, "
            f"grad ckpt {'on' if p.grad_ckpt else 'off'}, {p.precision}",
        ),
        (
            "plan",
            "training",
            f"{e.training.samples:,.0f} samples at {e.training.image_size}px, "
            f"patch dropout {e.training.patch_dropout:g}",
        ),
        ("params", "total", f"{e.params.total:,} (vision {e.params.vision:,}, text {e.params.text:,})"),
    ]


def _memory_rows(e: Estimate) -> list[Row]:
    m = e.memory
    rows: list[Row] = []
    for k, v in m.gpu_terms.items():
        if abs(v) >= 2**20:  # hide zero terms and int() rounding residues
            rows.append(("memory/GPU", k, _gib(v)))
    rows += [
        (
            "memory/GPU",
            "total",
            f"{_gib(m.gpu_total_bytes)} of {_gib(m.hbm_bytes)} ({_gib(m.gpu_headroom_bytes)} headroom)",
        ),
        ("memory/node", "host RAM", f"{_gib(m.host_per_node_bytes)} of {_gib(m.host_ram_bytes)}"),
    ]
    if m.nvme_per_node_bytes:
        rows.append(("memory/node", "NVMe", _bytes(m.nvme_per_node_bytes)))
    return rows


def _comm_rows(e: Estimate) -> list[Row]:
    rows: list[Row] = []
    for col in e.comm.collectives:
        if col.message_bytes:
            rows.append(
                (
                    "comm/step",
                    col.name,
                    f"{_bytes(col.message_bytes)} per GPU in {col.calls:,.0f} calls, {_dur(col.time_s)}",
                )
            )
    rows += [
        (
            "comm/step",
            "per GPU",
            f"{_bytes(e.comm.message_bytes_per_gpu)} (ring: {_bytes(e.comm.ring_bytes_per_gpu)} sent, "
            f"{_bytes(e.comm.inter_node_bytes_per_gpu)} inter-node)",
        ),
        (
            "comm/step",
            "cluster",
            f"{_bytes(e.comm.cluster_ring_bytes)} sent ({_bytes(e.comm.cluster_inter_node_bytes)} inter-node)",
        ),
    ]
    return rows


def _time_rows(e: Estimate, calibrated: bool) -> list[Row]:
    c, t = e.compute, e.time
    mfu_note = "" if calibrated else ", uncalibrated"
    rows: list[Row] = [
        (
            "time/step",
            "compute",
            f"{_dur(c.compute_s)} (per micro-batch of {e.plan.micro_batch}: GEMMs {_dur(c.gemm_s)} at "
            f"{c.gemm_efficiency:.0%} of peak, attention {_dur(c.attention_s)}, memory-bound "
            f"{_dur(c.memory_bound_s)}, host {_dur(c.host_s)}; {e.training.stack})",
        ),
        (
            "time/step",
            "overhead",
            f"{_dur(c.overhead_s)} ({_dur(e.figure('time.microbatch_overhead').value)} per "
            f"micro-batch × {e.plan.grad_accum} + {_dur(e.figure('time.step_overhead').value)} "
            f"per step)",
        ),
        ("time/step", "data loading", _data_loading(e)),
        ("time/step", "exposed comm", f"{_dur(e.comm.exposed_s)} of {_dur(e.comm.total_s)}"),
    ]
    if c.offload_s:
        rows.append(("time/step", "offload", _dur(c.offload_s)))
    rows += [
        ("time/step", "step", _dur(c.step_s)),
        ("throughput", "samples/s", f"{c.samples_per_s:,.0f} (MFU {c.mfu:.1%}{mfu_note})"),
        ("time", "steps", f"{t.steps:,.0f}"),
        (
            "time",
            "checkpoints",
            f"{t.checkpoints:,.0f} every {_dur(t.checkpoint_interval_s)}, {_bytes(t.checkpoint_bytes)} each, "
            f"{_dur(t.checkpoint_stall_s)} stalled",
        ),
        ("time", "wall", f"{_dur(t.wall_s)} (start-up {_dur(t.startup_s)}, rework {_dur(t.rework_s)})"),
    ]
    return rows


def _cost_rows(e: Estimate) -> list[Row]:
    rows: list[Row] = []
    if e.cost is not None:
        rows.append(("cost", "GPU-hours", f"{e.cost.gpu_hours:,.0f} ({e.cost.node_hours:,.0f} node-hours)"))
        for pr in e.cost.prices:
            rows.append(
                (
                    "cost",
                    pr.pricing,
                    f"${pr.total_usd:,.0f} (${pr.usd_per_node_hour:,.2f}/node-h, "
                    f"{_dur(pr.wall_s)}, storage ${pr.storage_usd:,.0f})",
                )
            )
        rows.append(("cost", "energy", f"{e.cost.energy_kwh:,.0f} kWh, {e.cost.co2_kg / 1000:,.1f} t CO2e"))
    return rows


def _data_loading(e: Estimate) -> str:
    """The data-loading floor, its workers, and whether the step waits for it."""
    c = e.compute
    inputs = e.figure("time.data_loading_per_step").inputs
    workers = float(inputs["loader_cores_per_gpu"])
    cores = float(inputs["host_cpu_cores"]) / e.plan.gpus_per_node
    if c.data_loading_s >= c.step_s:
        more = f"--data-workers up to {cores:g}" if workers < cores else "no more cores per GPU to add"
        return (
            f"{_dur(c.data_loading_s)} (binds: the step waits for {workers:g} loader workers per GPU; {more})"
        )
    return f"{_dur(c.data_loading_s)} (a floor under the step: {workers:g} loader workers per GPU)"


def request_from(kw: dict) -> Request:
    """The estimate flags (shared with `render`) as a Request."""
    kw = dict(kw)
    kw["hbm_headroom"] = parse_headroom(kw.get("hbm_headroom"))
    return Request(**kw)


def machine_rows(e: Estimate) -> list[dict[str, object]]:
    """The estimate for CSV: raw numbers, one row per figure, with its unit and source; the layout,
    each price (`cost.on_demand_usd`, `wall.on_demand_days`) and the verdict."""
    p = e.plan
    rows: list[dict[str, object]] = []

    def add(figure: str, value: object, unit: str = "", source: str = "") -> None:
        rows.append({"figure": figure, "value": value, "unit": unit, "source": source})

    for key in (*SEARCHED_PLAN_FIELDS, "precision"):
        add(f"plan.{key}", getattr(p, key))
    add("plan.gpus", p.world_size, "GPUs")
    add("plan.global_batch", p.global_batch, "samples")
    add("training.samples", e.training.samples, "samples")
    for f in e.derivation:
        add(f.name, f.value, f.unit, f.source)
    if e.cost is not None:
        add("cost.gpu_hours", e.cost.gpu_hours, "GPU-hours")
        for pr in e.cost.prices:
            add(f"cost.{pr.pricing}_usd", pr.total_usd, "USD", pr.source)
            add(f"cost.{pr.pricing}_usd_per_node_hour", pr.usd_per_node_hour, "USD/node-hour", pr.source)
            add(f"wall.{pr.pricing}_days", pr.wall_s / 86400, "days")
    add("verdict.fits", e.fits)
    add("verdict.text", e.verdict)
    for ch in e.chosen:
        key, _, how = ch.partition("=")
        add(f"chosen.{key}", how)
    return rows


UNCALIBRATED = (
    "none: uncalibrated prediction (the profile's rates × the compute scale fitted on published runs, "
    "not on your runs; `evaplan validate` shows how far off it has been); `evaplan calibrate` fits it to your runs"
)


def with_range(e: Estimate, r: TimeRange) -> Estimate:
    """The estimate with low/high of wall time, GPU-hours and the first price's dollars."""
    first = e.cost.prices[0].total_usd if e.cost is not None and e.cost.prices else None
    gpu_h = e.cost.gpu_hours if e.cost is not None else e.plan.world_size * e.time.wall_s / 3600.0
    return e.model_copy(update={"range": prediction_range(r, e.time.wall_s, gpu_h, first)})


def range_rows(e: Estimate, r: TimeRange) -> list[dict[str, str]]:
    """How far off the planner has been: wall time and dollars with their ranges, and on what basis."""
    rows = [("range", "wall", fmt_days_range(r, e.time.wall_s))]
    if e.cost is not None:
        for pr in e.cost.prices:
            rows.append(("range", pr.pricing, fmt_usd_range(r, pr.total_usd)))
    rows.append(("range", "calibrated" if r.calibrated else "not calibrated", r.basis))
    return [{"section": s, "figure": f, "value": v} for s, f, v in rows]


RANGE_UNITS = {"wall_days": "days", "gpu_hours": "GPU-hours", "cost_usd": "USD", "time_ratio": ""}


def range_machine_rows(e: Estimate) -> list[dict[str, object]]:
    """The range for CSV, in machine_rows' shape: `range.wall_days_low`, ..., `range.cost_usd_high`
    (the first price), `range.calibrated`; the basis as the source."""
    if e.range is None:
        return []
    rows: list[dict[str, object]] = []
    for k, v in e.range.model_dump().items():
        if k.endswith(("_low", "_high")) and v is not None:
            unit = RANGE_UNITS[k.rsplit("_", 1)[0]]
            rows.append({"figure": f"range.{k}", "value": v, "unit": unit, "source": e.range.basis})
    rows.append(
        {"figure": "range.calibrated", "value": e.range.calibrated, "unit": "", "source": e.range.basis}
    )
    return rows


def range_explain(e: Estimate, r: TimeRange) -> str:
    """The range's derivation in the --explain format."""
    if e.range is None:
        return ""
    src = (
        "the calibration's runs: measured / calibrated step, widened by their step spread"
        if r.calibrated
        else "profiles/validation_intervals.yaml, fitted by `python -m planner.validation --write-intervals` "
        "on the fit half of profiles/published_runs.yaml (docs/validation.md)"
    )
    return (
        f"range.wall_days = {e.range.wall_days_low:,.6g} – {e.range.wall_days_high:,.6g} days\n"
        f"    formula: wall × time ratio low – high\n"
        f"    inputs:  wall_days={e.time.wall_s / 86400:,.6g}, time_ratio_low={r.low:.6g}, "
        f"time_ratio_high={r.high:.6g}\n"
        f"    source:  {src}\n"
    )


def calibration_rows(cal: CalibrationSpec | None) -> list[dict[str, str]]:
    """Say whether a calibration was used and, if so, predicted vs measured for the runs behind it."""
    if cal is None:
        return [
            {
                "section": "calibration",
                "figure": "applied",
                "value": UNCALIBRATED,
            }
        ]
    rows = [
        {
            "section": "calibration",
            "figure": "applied",
            "value": f"{cal.describe()} (--no-calibration to ignore it)",
        }
    ]
    for r in comparison_rows(cal):
        rows.append(
            {
                "section": "calibration",
                "figure": r["run"],
                "value": f"{r['layout']}: measured {r['measured step']}; uncalibrated {r['uncalibrated']}; "
                f"calibrated {r['calibrated']}",
            }
        )
    return rows


def explain_text(e: Estimate) -> str:
    out = []
    for f in e.derivation:
        out.append(f"{f.name} = {f.value:,.6g} {f.unit}")
        out.append(f"    formula: {f.formula}")
        if f.inputs:
            out.append(
                "    inputs:  "
                + ", ".join(
                    f"{k}={v:,.6g}" if isinstance(v, float) else f"{k}={v}" for k, v in f.inputs.items()
                )
            )
        if f.source:
            out.append(f"    source:  {f.source}")
    return "\n".join(out) + "\n"


@click.command("estimate")
@click.option(
    "--model",
    "model_name",
    required=True,
    help="Model profile, e.g. eva-clip-18b.",
    shell_complete=profile_names("models"),
)
@hardware_option()
@click.option("--gpus", type=int, default=None, help="GPUs in total (a multiple of the GPUs per node).")
@click.option("--nodes", type=int, default=None, help="Nodes (instead of --gpus).")
@offering_option()
@click.option(
    "--samples", type=FiniteFloat(), default=None, help="Image-text pairs to see (default: the recipe's)."
)
@click.option("--global-batch", type=int, default=None, help="Global batch (default: the recipe's).")
@click.option(
    "--batch-tolerance",
    type=FiniteFloat(0, 0.5),
    default=DEFAULT_BATCH_TOLERANCE,
    show_default=True,
    help="Share the global batch may deviate from its target when the micro-batch is searched (0: exact).",
)
@click.option("--image-size", type=int, default=None, help="Training resolution (default: the recipe's).")
@click.option("--patch-dropout", type=FiniteFloat(0, 1, max_open=True), default=None)
@click.option("--precision", type=click.Choice(["bf16", "fp16"]), default=None)
@stack_option(
    "Software stack: eager PyTorch (the bundled trainer), amp (eager under autocast, fp32 weights: "
    "OpenCLIP), torch.compile, or fused kernels (NeMo/TE)."
)
@attention_option()
@optimizer_impl_option()
@data_workers_option()
@click.option("--zero-stage", type=click.IntRange(0, 3), default=None)
@click.option("--offload-optimizer", type=click.Choice(["none", "cpu", "nvme"]), default=None)
@click.option("--offload-param", type=click.Choice(["none", "cpu", "nvme"]), default=None)
@click.option(
    "--micro-batch", type=click.IntRange(min=1), default=None, help="train_micro_batch_size_per_gpu"
)
@click.option("--grad-accum", type=click.IntRange(min=1), default=None, help="gradient_accumulation_steps")
@click.option("--grad-ckpt/--no-grad-ckpt", default=None, help="Activation checkpointing of every block.")
@click.option(
    "--hpz",
    "hpz_partition_size",
    type=click.IntRange(min=1),
    default=None,
    help="ZeRO++ zero_hpz_partition_size (default: searched).",
)
@click.option("--quantized-weights", is_flag=True, help="ZeRO++ zero_quantized_weights (qwZ).")
@click.option("--quantized-gradients", is_flag=True, help="ZeRO++ zero_quantized_gradients (qgZ).")
@click.option(
    "--checkpoint-every",
    "checkpoint_every_s",
    type=FiniteFloat(min=0, min_open=True),
    default=None,
    help="Seconds between checkpoints (default: Young/Daly optimum).",
)
@click.option(
    "--dataset-tb", type=FiniteFloat(min=0), default=0.0, help="Dataset kept in object storage, TB."
)
@click.option(
    "--objective",
    type=click.Choice(["cost", "time", "energy"]),
    default="cost",
    show_default=True,
    help="What the settings left open are chosen for (as in `evaplan plan`).",
)
@click.option(
    "--pricing",
    type=click.Choice(PRICINGS),
    default=None,
    help="Price the cost objective uses (default: on-demand, or on-premises cost).",
)
@click.option(
    "--hbm-headroom",
    default=DEFAULT_HBM_HEADROOM_TEXT,
    show_default=True,
    help="HBM kept free per GPU for the memory prediction's error: a share (10%) or GiB (8GiB); 0 for none.",
)
@format_option(*REPORT_FORMATS)
@click.option(
    "--explain", is_flag=True, help="Print the derivation of every figure: formula, inputs, source."
)
@click.option(
    "--no-calibration",
    is_flag=True,
    help="Ignore the hardware's calibration (`evaplan calibrate`) and use the profile as shipped.",
)
@click.pass_context
def command(
    ctx: click.Context,
    model_name: str,
    hardware_name: str | None,
    offering_name: str | None,
    fmt: str,
    explain: bool,
    no_calibration: bool,
    **kw,
) -> None:
    """Memory per GPU and host, communication, step time, wall time and cost of one run.

    Settings not given are chosen: the recipe's samples, resolution and batch, then the layout (ZeRO
    stage, offload, hpZ, checkpointing, micro-batch) of the best plan `evaplan plan --gpus N` finds for
    the same --objective; the report lists each and how it was chosen. Exit code 2 when the request
    cannot be met.
    """
    dirs = profiles_dirs(ctx)
    model = prof.load_model(model_name, dirs)
    hardware_name, offering = hardware_and_offering(ctx, hardware_name, offering_name, dirs)
    if hardware_name is None:
        raise EvaplanError(
            "no hardware given", hint="add --hardware (e.g. h100-sxm) or --offering (e.g. aws-p5)"
        )
    cal = calibrated_hardware(prof.load_hardware(hardware_name, dirs), dirs, use=not no_calibration)
    est = choose(model, cal.hardware, request_from(kw), offering)
    rng = range_for(cal.hardware, dirs, estimate_class(est))
    est = with_range(est, rng)
    if fmt == "json":
        click.echo(dumps_json(est), nl=False)
        if cal.calibration is not None:
            click.echo(
                f"note: using the {cal.calibration.describe()} (--no-calibration to ignore it)", err=True
            )
    elif fmt == "csv":
        click.echo(format_rows(machine_rows(est) + range_machine_rows(est), fmt), nl=False)
    else:
        rows = summary_rows(est, cal.calibration is not None) + range_rows(est, rng)
        click.echo(format_rows(rows + calibration_rows(cal.calibration), fmt), nl=False)
        if explain:
            click.echo("\nderivation\n" + explain_text(est) + range_explain(est, rng), nl=False)
    if not est.fits:
        raise InfeasibleError(est.verdict, hint=fixes_for(est))
