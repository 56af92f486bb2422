"""`evaplan plan`: the best settings and GPU count for one model, with the ranked alternatives, the
cost-vs-time Pareto frontier, the binding constraints and why the plans next to the choice lost."""

from __future__ import annotations

import dataclasses
import re
import sys
from collections.abc import Callable
from typing import Any

import click
import numpy as np

from launcher.commands._options import (
    OFFERING_SET_HELP,
    REPORT_FORMATS,
    FiniteFloat,
    MultiValueCommand,
    attention_option,
    data_workers_option,
    format_option,
    offering_filter_options,
    optimizer_impl_option,
    plot_option,
    profiles_dirs,
    stack_option,
)
from launcher.completion import profile_names
from planner import profiles as prof
from planner.calibration import calibrated_hardware, comparison_rows, range_for
from planner.errors import EvaplanError
from planner.grid import SearchSpace
from planner.headroom import DEFAULT_HBM_HEADROOM_TEXT, WHY, HbmHeadroom, parse_headroom
from planner.intervals import RangeClass, TimeRange, fmt_days_range, fmt_usd_range, range_class, range_fields
from planner.limits import LIMITS, check_value
from planner.ops import attention_refusal, optimizer_impl_refusal
from planner.params import count_params
from planner.report import dumps_json, format_rows, to_jsonable
from planner.search import (
    Candidate,
    Constraints,
    SearchResult,
    as_dict,
    candidate,
    compare_line,
    fmt_duration,
    fmt_usd,
    rank_order,
    search,
    thin_frontier,
    top_order,
)
from planner.spec import PRICINGS, HardwareSpec, ModelSpec, TrainingSpec
from planner.units import GIB
from planner.vectorized import Option, make_option

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(w|d|h|m|min|s)\s*$", re.IGNORECASE)
_SECONDS = {"w": 7 * 86400.0, "d": 86400.0, "h": 3600.0, "m": 60.0, "min": 60.0, "s": 1.0}
_MONEY = re.compile(r"^\s*\$?\s*(\d+(?:[.,]\d+)*)\s*([kmb])?\s*$", re.IGNORECASE)
_SCALE = {"": 1.0, "k": 1e3, "m": 1e6, "b": 1e9}


def parse_duration_s(text: str, flag: str = "--deadline") -> float:
    """'30d', '12h', '90m', '2w', '3600s' → seconds."""
    m = _DURATION.match(text)
    if not m or float(m.group(1)) <= 0:
        raise EvaplanError(f"{flag} {text!r} is not a duration", hint="write it like 30d, 12h, 90m or 2w")
    seconds = float(m.group(1)) * _SECONDS[m.group(2).lower()]
    check_value("duration_s", seconds, flag)  # 400 digits are inf
    return seconds


def parse_usd(text: str, flag: str = "--budget") -> float:
    """'2.5M', '800k', '1200', '$1,200' → dollars."""
    m = _MONEY.match(text)
    if not m:
        raise EvaplanError(
            f"{flag} {text!r} is not an amount of dollars", hint="write it like 2.5M, 800k or 1200"
        )
    digits = m.group(1).replace(",", "")
    try:
        value = float(digits) * _SCALE[(m.group(2) or "").lower()]
    except ValueError:
        raise EvaplanError(
            f"{flag} {text!r} is not an amount of dollars", hint="write it like 2.5M, 800k or 1200"
        ) from None
    if value <= 0:
        raise EvaplanError(f"{flag} must be positive, got {text!r}", hint="write it like 2.5M, 800k or 1200")
    check_value("usd", value, flag)  # 400 digits are inf
    return value


def _split(values: tuple[str, ...]) -> list[str]:
    out: list[str] = []
    for v in values:
        out += [x for x in v.split(",") if x.strip()]
    return [x.strip() for x in out]


def search_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """The flags `plan` and `compare` share: what is planned and where, the limits of the search,
    the training run, and what the plans must leave free or may use."""
    f = offering_filter_options(f)  # listed after the options below
    for o in reversed([*_what_and_where(), *_search_limits(), *_training_run(), *_memory_and_more()]):
        f = o(f)
    return f


Decorator = Callable[[Callable[..., Any]], Callable[..., Any]]


def _count_option(flag: str, help: str | None = None) -> Decorator:
    """A whole number of at least 1, none by default (the search or the recipe decides)."""
    return click.option(flag, type=click.IntRange(min=1), default=None, help=help)


def _share_option(flag: str, most: float, default: float, help: str) -> Decorator:
    """A share from 0 to `most`."""
    return click.option(flag, type=FiniteFloat(0, most), default=default, show_default=True, help=help)


def _what_and_where() -> list[Decorator]:
    """The model, the hardware or offerings it runs on, the price and what the search optimises."""
    return [
        click.option(
            "--model",
            "model_name",
            required=True,
            help="Model profile, e.g. eva-clip-18b.",
            shell_complete=profile_names("models"),
        ),
        click.option(
            "--hardware",
            "hardware_names",
            multiple=True,
            shell_complete=profile_names("hardware"),
            help="Hardware profile(s), unpriced (GPU-hours); repeatable, or several after one flag.",
        ),
        click.option(
            "--offering",
            "offering_names",
            multiple=True,
            shell_complete=profile_names("offerings"),
            help="Priced offering(s), e.g. aws-p5 tensorwave-mi300x; the hardware follows from each. "
            f"Or a set: {OFFERING_SET_HELP}.",
        ),
        click.option(
            "--pricing",
            type=click.Choice(PRICINGS),
            default=None,
            help="Price used for offerings (default: on-demand, or on-premises cost); with a set of "
            "offerings, only those that publish it.",
        ),
        click.option(
            "--objective", type=click.Choice(["cost", "time", "energy"]), default="cost", show_default=True
        ),
        click.option("--deadline", default=None, help="Wall-clock limit, e.g. 30d, 12h, 90m."),
        click.option(
            "--budget", default=None, help="Dollar limit, e.g. 2.5M, 800k, 1200 (needs --offering)."
        ),
    ]


def _search_limits() -> list[Decorator]:
    """Deadline, budget and the GPU and node counts searched."""
    return [
        _count_option("--max-gpus", help="At most this many GPUs."),
        _count_option(
            "--gpus", help="Exactly this many GPUs (whole nodes) instead of searching the node count."
        ),
        click.option(
            "--max-nodes",
            type=click.IntRange(1, 4096),
            default=512,
            show_default=True,
            help="Node counts searched: 1..N.",
        ),
        click.option(
            "--min-dp-group",
            type=click.IntRange(1, int(LIMITS["gpus"][1])),
            default=None,
            help="Smallest data-parallel (and hpZ) group; default: a node where the hardware profile has "
            "collective.small_group_gbps (MI300X), else 1.",
        ),
    ]


def _training_run() -> list[Decorator]:
    """The run's samples, batch, resolution, precision, stack and attention (default: the recipe's)."""
    return [
        click.option(
            "--samples",
            type=FiniteFloat(),
            default=None,
            help="Image-text pairs to see (default: the recipe's).",
        ),
        _count_option("--global-batch", help="Global batch (default: the recipe's)."),
        _share_option(
            "--batch-tolerance",
            0.5,
            0.02,
            "Share the global batch may deviate from --global-batch (0: exact).",
        ),
        _count_option("--image-size"),
        click.option("--patch-dropout", type=FiniteFloat(0, 1, max_open=True), default=None),
        click.option("--precision", type=click.Choice(["bf16", "fp16"]), default=None),
        stack_option(
            "Software stack: eager PyTorch (the bundled trainer), amp (autocast, OpenCLIP), torch.compile, fused."
        ),
        attention_option(),
        optimizer_impl_option(),
    ]


def _memory_and_more() -> list[Decorator]:
    """Loaders, memory headroom, the ZeRO/offload choices searched, checkpoints, storage, calibration, plot."""
    return [
        data_workers_option(),
        click.option(
            "--hbm-headroom",
            default=DEFAULT_HBM_HEADROOM_TEXT,
            show_default=True,
            help="HBM kept free per GPU for the memory prediction's error: a share (10%) or GiB (8GiB); "
            "0 for none.",
        ),
        _share_option("--host-headroom", 0.9, 0.0, "Share of host RAM to keep free."),
        click.option(
            "--zero-stage",
            "zero_stages",
            type=click.IntRange(0, 3),
            multiple=True,
            help="Restrict to these ZeRO stages (repeatable).",
        ),
        click.option("--no-offload", is_flag=True, help="Never offload optimizer or parameters."),
        click.option("--no-hpz", is_flag=True, help="Never use ZeRO++ hpZ."),
        click.option(
            "--checkpoint-every",
            "checkpoint_every_s",
            type=FiniteFloat(min=0, min_open=True),
            default=None,
            help="Seconds between checkpoints (default: Young/Daly optimum).",
        ),
        click.option(
            "--dataset-tb", type=FiniteFloat(min=0), default=0.0, help="Dataset in object storage, TB."
        ),
        click.option(
            "--no-calibration",
            is_flag=True,
            help="Ignore hardware calibrations (`evaplan calibrate`); use the profiles as shipped.",
        ),
        plot_option("Write a PNG: cost vs time with the Pareto frontier, and per-GPU memory of the choice."),
    ]


def offering_names_for(
    ctx: click.Context, offering_names: list[str], hardware_names: list[str], kw: dict[str, Any]
) -> list[str]:
    """The offerings named, with `all` and patterns expanded and narrowed by --vendor, --gpu,
    --provider and (for a set) --pricing; the narrowing flags alone mean every offering."""
    from planner.catalog import OfferingFilter, is_set, select_offerings

    narrowing = OfferingFilter(vendor=kw.get("vendor"), gpu=kw.get("gpu"), provider=kw.get("provider"))
    if narrowing.given and not offering_names and not hardware_names:
        offering_names = ["all"]
    sets = any(is_set(n) for n in offering_names)
    if narrowing.given and not sets:
        raise EvaplanError(
            f"{narrowing.describe()} narrows a set of offerings, but only names were given",
            hint="use --offering all or a pattern such as 'aws-*', or drop the filter",
        )
    pricing = kw.get("pricing") if sets else None
    flt = OfferingFilter(narrowing.vendor, narrowing.gpu, narrowing.provider, pricing)
    return select_offerings(offering_names, profiles_dirs(ctx), flt)


def resolve_options(
    ctx: click.Context,
    hardware_names: tuple[str, ...],
    offering_names: tuple[str, ...],
    pricing: str | None,
    use_calibration: bool = True,
    filters: dict[str, Any] | None = None,
) -> list[Option]:
    dirs = profiles_dirs(ctx)

    def load_hardware(name: str) -> HardwareSpec:
        # A calibration (`evaplan calibrate`) replaces the profile's efficiency factors; say so on stderr.
        cal = calibrated_hardware(prof.load_hardware(name, dirs), dirs, use=use_calibration)
        if cal.calibration is not None and name not in used_calibrations:
            used_calibrations.add(name)
            click.echo(
                f"note: using the {cal.calibration.describe()} (--no-calibration to ignore it)", err=True
            )
            for r in comparison_rows(cal.calibration):
                click.echo(
                    f"  {r['run']} ({r['layout']}): measured step {r['measured step']}, uncalibrated "
                    f"{r['uncalibrated']}, calibrated {r['calibrated']}",
                    err=True,
                )
        return cal.hardware

    used_calibrations: set[str] = set()
    if ctx.obj is not None:
        ctx.obj["calibrated"] = used_calibrations
    hw_names, off_names = _split(hardware_names), _split(offering_names)
    off_names = offering_names_for(ctx, off_names, hw_names, {**(filters or {}), "pricing": pricing})
    if not hw_names and not off_names:
        raise EvaplanError(
            "nothing to plan on", hint="name --hardware (e.g. h100-sxm mi300x) or --offering (e.g. aws-p5)"
        )
    options: list[Option] = []
    seen: set[str] = set()
    for name in off_names:
        off = prof.load_offering(name, dirs)
        if off.name not in seen:
            seen.add(off.name)
            options.append(make_option(load_hardware(off.hardware), off, pricing))
    for name in hw_names:
        hw = load_hardware(name)
        if hw.name not in seen:
            seen.add(hw.name)
            options.append(make_option(hw, None, None))
    return options


def training_for(model: ModelSpec, kw: dict[str, Any]) -> TrainingSpec:
    r = model.recipe
    stack, impl = kw.get("stack") or "eager", kw.get("optimizer_impl")
    refusal = optimizer_impl_refusal(stack, impl, r.optimizer)
    if refusal is not None:  # TrainingSpec refuses it too; this says it in the flags' words
        raise refusal
    return TrainingSpec(
        samples=kw["samples"] if kw["samples"] is not None else r.samples_seen,
        global_batch=kw["global_batch"] if kw["global_batch"] is not None else r.global_batch,
        image_size=kw["image_size"] if kw["image_size"] is not None else r.image_size,
        patch_dropout=kw["patch_dropout"] if kw["patch_dropout"] is not None else r.patch_dropout,
        precision=kw.get("precision") or (r.precision if r.precision != "fp32" else "bf16"),
        stack=stack,
        attention=kw.get("attention") or "flash",
        optimizer_impl=impl,
        loader_workers=kw.get("data_workers"),
        checkpoint_every_s=kw["checkpoint_every_s"],
        dataset_tb=kw["dataset_tb"],
    )


def run_search(ctx: click.Context, kw: dict[str, Any], show_progress: bool = False) -> SearchResult:
    """Parse the shared flags and search; used by `plan` and `compare`. show_progress: a progress
    line on a terminal's stderr when the search takes long (Progress)."""
    for name in ("samples", "global_batch", "image_size", "dataset_tb", "gpus", "checkpoint_every_s"):
        check_value(name, kw.get(name))
    check_value("gpus", kw.get("max_gpus"), "--max-gpus")
    dirs = profiles_dirs(ctx)
    model = prof.load_model(kw["model_name"], dirs)
    options = resolve_options(
        ctx,
        kw["hardware_names"],
        kw["offering_names"],
        kw["pricing"],
        use_calibration=not kw.get("no_calibration", False),
        filters={k: kw.get(k) for k in ("vendor", "gpu", "provider")},
    )
    image_size = kw["image_size"] or model.recipe.image_size
    if image_size % model.vision.patch_size:
        raise EvaplanError(
            f"image size {image_size} is not a multiple of the patch size {model.vision.patch_size}",
            hint=f"use a multiple of {model.vision.patch_size}",
        )
    space = SearchSpace(
        max_nodes=kw["max_nodes"],
        zero_stages=tuple(sorted(set(kw["zero_stages"]))) or (0, 1, 2, 3),
        offload_optimizer=("none",) if kw["no_offload"] else ("none", "cpu", "nvme"),
        offload_param=("none",) if kw["no_offload"] else ("none", "cpu", "nvme"),
        hpz=not kw["no_hpz"],
        gpus=kw["gpus"],
    )
    headroom = parse_headroom(kw["hbm_headroom"])
    constraints = Constraints(
        batch_tolerance=kw["batch_tolerance"],
        deadline_s=parse_duration_s(kw["deadline"]) if kw["deadline"] else None,
        budget_usd=parse_usd(kw["budget"]) if kw["budget"] else None,
        max_gpus=kw["max_gpus"],
        hbm_headroom=headroom.fraction,
        hbm_headroom_gib=headroom.gib,
        host_headroom=kw["host_headroom"],
        min_dp_group=kw["min_dp_group"],
    )
    training = training_for(model, kw)
    options, excluded = runnable_options(options, training.attention, headroom)
    progress = Progress(sys.stderr) if show_progress else None
    try:
        res = search(
            model,
            options,
            training,
            objective=kw["objective"],
            space=space,
            constraints=constraints,
            keep_feasible=bool(kw.get("plot_path")),  # the plot draws every feasible plan
            progress=progress,
        )
    finally:
        if progress is not None:
            progress.close()
    return dataclasses.replace(res, excluded=excluded) if excluded else res


def runnable_options(
    options: list[Option], attention: str, headroom: HbmHeadroom
) -> tuple[list[Option], tuple[tuple[Option, str], ...]]:
    """The options whose GPU can run the attention kernel and leaves room under the HBM margin, and
    (option, why) for each left out (`--attention cudnn` over NVIDIA and AMD offerings: the AMD ones;
    `--hbm-headroom 75GiB` over 80 GB and 192 GB GPUs: the 80 GB ones). None left: the refusal of the
    first, as a single option's estimate gives it (exit 2)."""
    keep: list[Option] = []
    left: list[tuple[Option, str]] = []
    first: EvaplanError | None = None
    for opt in options:
        hw = opt.hardware
        refusal = attention_refusal(hw, attention) or headroom.refusal(hw.hbm_bytes, hw.name)
        if refusal is None:
            keep.append(opt)
        else:
            first = first or refusal
            left.append((opt, refusal.message))
    if not keep and first is not None:
        raise first
    return keep, tuple(left)


class Progress:
    """'searching: 9/16 options, 1.2 s' on stderr once a search has run for `after_s`, and only on a
    terminal: never in what a pipe or a file receives (JSON, CSV, the docs' captured outputs)."""

    def __init__(self, stream: Any, after_s: float = 1.0, clock: Callable[[], float] | None = None) -> None:
        import time

        self.stream, self.after_s = stream, after_s
        self.clock = clock or time.monotonic
        self.start = self.clock()
        self.shown = False
        self.tty = bool(getattr(stream, "isatty", lambda: False)())

    def __call__(self, done: int, total: int) -> None:
        elapsed = self.clock() - self.start
        if self.tty and elapsed >= self.after_s and done < total:
            self.stream.write(f"\rsearching: {done}/{total} options, {elapsed:.1f} s")
            self.stream.flush()
            self.shown = True

    def close(self) -> None:
        if self.shown:
            self.stream.write("\r\033[K")  # the table starts on a clean line
            self.stream.flush()


class Ranges:
    """The time/money range of each candidate (planner/intervals.py): its hardware's calibration, or the
    published runs comparable to it (binding, model size class, stack: from `res`, the search it came
    from; without one, every published run), looked up once per hardware and class."""

    def __init__(self, dirs: list[str] | None = None, res: SearchResult | None = None) -> None:
        self.dirs = dirs
        self.res = res
        self._total_params = count_params(res.model).total if res is not None else 0
        self._seen: dict[tuple[str, str | None], TimeRange] = {}

    def range_class(self, c: Candidate) -> RangeClass | None:
        if self.res is None:
            return None
        return range_class(self._total_params, c.option.hardware, c.plan, self.res.training, c.step_s)

    def __call__(self, c: Candidate) -> TimeRange:
        hw = c.option.hardware
        cls = self.range_class(c)
        key = (hw.name, cls.key if cls is not None else None)
        if key not in self._seen:
            self._seen[key] = range_for(hw, self.dirs, cls)
        return self._seen[key]

    def row(self, c: Candidate) -> dict[str, Any]:
        """as_dict plus wall_days_low/high, gpu_hours_low/high, cost_usd_low/high, calibrated."""
        return {**as_dict(c), **range_fields(self(c), c.wall_s, c.gpu_hours, c.total_usd)}


def row(c: Candidate, ranges: Ranges | None = None) -> dict[str, Any]:
    """A readable table row."""
    r = (ranges or Ranges())(c)
    lo, hi = r.of(c.wall_s)
    return {
        "option": c.option.label,
        "GPUs": f"{c.plan.nodes}×{c.plan.gpus_per_node}",
        "settings": c.settings(),
        "wall": fmt_duration(c.wall_s),
        "wall range": f"{fmt_duration(lo)}–{fmt_duration(hi)}",
        "GPU-hours": f"{c.gpu_hours:,.0f}",
        "cost": fmt_usd(c.total_usd) if c.total_usd is not None else "-",
        "energy": f"{c.energy_kwh / 1000:,.1f} MWh",
        "GiB/GPU": f"{c.gpu_total_bytes / GIB:.1f}/{c.hbm_bytes / GIB:.0f}",
    }


def best_per_option(res: SearchResult, gpus: int | None = None) -> tuple[list[Candidate | None], list[str]]:
    """The best feasible plan of each option for the objective (None where none is feasible), on
    `gpus` GPUs where given (the nearest feasible GPU count where an option cannot run on exactly
    that many), and a note per option that could not."""
    t = res.table
    world = t["nodes"] * t["gpus_per_node"]
    out: list[Candidate | None] = []
    notes: list[str] = []
    for k, opt in enumerate(res.options):
        mask = res.feasible & (t["option"] == k)
        if gpus is not None and mask.any():
            exact = mask & (world == gpus)
            if exact.any():
                mask = exact
            else:
                gap = abs(world - gpus)
                nearest = int(gap[mask].min())
                mask = mask & (gap == nearest)
                got = int(world[mask.nonzero()[0][0]])
                notes.append(f"{opt.label} has no feasible plan on {gpus} GPUs; shown on {got}")
        idx = mask.nonzero()[0]
        out.append(
            candidate(t, int(top_order(t, res.objective, idx, 1)[0]), res.options) if len(idx) else None
        )
    return out, notes


def runners_up(res: SearchResult) -> list[Candidate]:
    """With several options: the best plan of each option other than the chosen one's, best first."""
    if len(res.options) < 2:
        return []
    best, _ = best_per_option(res)
    idx = np.array(
        [c.index for c in best if c is not None and c.option.label != res.chosen.option.label], dtype=np.int64
    )
    return [candidate(res.table, int(i), res.options) for i in rank_order(res.table, res.objective, idx)]


def runner_up_rows(res: SearchResult, ranges: Ranges) -> list[dict[str, Any]]:
    return [
        {
            "rank": k + 2,
            "option": c.option.label,
            "GPUs": f"{c.plan.nodes}×{c.plan.gpus_per_node}",
            "settings": c.settings(),
            "wall": fmt_duration(c.wall_s),
            "cost": fmt_usd(c.total_usd) if c.total_usd is not None else "-",
            "vs chosen": compare_line(c, res.chosen, res.objective),
        }
        for k, c in enumerate(runners_up(res))
    ]


def calibration_note(res: SearchResult, calibrated: set[str] | None) -> str:
    """Which options' step times are uncalibrated predictions."""
    names = sorted({o.hardware.name for o in res.options} - (calibrated or set()))
    if not names:
        return "every option calibrated (`evaplan calibrate`)"
    return (
        f"none for {', '.join(names)}: uncalibrated predictions (profile rates × the compute scale fitted "
        "on published runs; `evaplan validate`); `evaplan calibrate` fits them to your runs"
    )


def chosen_rows(
    res: SearchResult, calibrated: set[str] | None = None, ranges: Ranges | None = None
) -> list[dict[str, str]]:
    c = res.chosen
    rng = (ranges or Ranges(res=res))(c)
    p = c.plan
    rows = [
        (
            "model",
            f"{res.model.name}: {res.training.samples:,.0f} samples, global batch target "
            f"{res.training.global_batch:,} (±{res.constraints.batch_tolerance:.0%})",
        ),
        (
            "objective",
            res.objective
            + (
                ""
                if c.total_usd is not None or res.objective != "cost"
                else " (unpriced: GPU-hours; name --offering for dollars)"
            ),
        ),
        ("option", c.option.label),
        ("cluster", f"{p.nodes} nodes × {p.gpus_per_node} {c.option.hardware.name} = {p.world_size} GPUs"),
        (
            "deepspeed",
            f"zero_optimization.stage {p.zero_stage}, offload_optimizer {p.offload_optimizer}, "
            f"offload_param {p.offload_param}, zero_hpz_partition_size {p.hpz_partition_size}",
        ),
        (
            "batch",
            f"train_micro_batch_size_per_gpu {p.micro_batch} × gradient_accumulation_steps {p.grad_accum} "
            f"× {p.world_size} = {p.global_batch:,}",
        ),
        ("activation checkpointing", "on" if p.grad_ckpt else "off"),
        (
            "memory/GPU",
            f"{c.gpu_total_bytes / GIB:.1f} of {c.hbm_bytes / GIB:.0f} GiB "
            f"({(c.hbm_bytes - c.gpu_total_bytes) / GIB:.1f} GiB free; {margin_text(res, c)})",
        ),
        ("host RAM/node", f"{c.host_per_node_bytes / GIB:,.0f} of {c.host_ram_bytes / GIB:,.0f} GiB"),
        ("step", f"{c.step_s:.2f} s"),
        ("wall", fmt_duration(c.wall_s)),
        ("GPU-hours", f"{c.gpu_hours:,.0f}"),
    ]
    if c.total_usd is not None:
        rows.append(("cost", f"{fmt_usd(c.total_usd)} ({c.option.pricing})"))
    rows.append(("wall range", fmt_days_range(rng, c.wall_s)))
    if c.total_usd is not None:
        rows.append(("cost range", fmt_usd_range(rng, c.total_usd)))
    rows.append(("calibrated" if rng.calibrated else "not calibrated", rng.basis))
    rows.append(
        (
            "energy",
            f"{c.energy_kwh / 1000:,.1f} MWh"
            + (f", {c.co2_kg / 1000:,.1f} t CO2e" if c.co2_kg is not None else ""),
        )
    )
    rows.append(("searched", f"{res.candidates_evaluated:,} candidates, {res.feasible_count:,} feasible"))
    rows.append(("calibration", calibration_note(res, calibrated)))
    if res.objective == "cost" and res.constraints.deadline_s is None:
        rows.append(
            (
                "note",
                "no --deadline: cost barely falls with fewer GPUs, so the cheapest plan can be slow; "
                "the Pareto frontier below shows what time costs",
            )
        )
    return [{"figure": k, "value": v} for k, v in rows]


def margin_text(res: SearchResult, c: Candidate) -> str:
    """The HBM safety margin the search kept, in GiB and as given."""
    h = HbmHeadroom(fraction=res.constraints.hbm_headroom, gib=res.constraints.hbm_headroom_gib)
    if h.none:
        return "no safety margin: --hbm-headroom 0"
    return f"safety margin {h.reserve_bytes(c.hbm_bytes) / GIB:.1f} GiB = {h.describe()} for {WHY}"


def excluded_rows(res: SearchResult) -> list[dict[str, str]]:
    """The options asked for and not searched, each with why (SearchResult.excluded)."""
    return [{"option": opt.name, "label": opt.label, "why": why} for opt, why in res.excluded]


def result_json(
    res: SearchResult, kw: dict[str, Any] | None = None, ranges: Ranges | None = None
) -> dict[str, Any]:
    ranges = ranges or Ranges(res=res)
    return {
        "model": res.model.name,
        "no_calibration": bool((kw or {}).get("no_calibration", False)),
        "objective": res.objective,
        "training": res.training,
        "candidates_evaluated": res.candidates_evaluated,
        "feasible": res.feasible_count,
        "constraints": {
            "batch_tolerance": res.constraints.batch_tolerance,
            "deadline_s": res.constraints.deadline_s,
            "budget_usd": res.constraints.budget_usd,
            "max_gpus": res.constraints.max_gpus,
            "hbm_headroom": res.constraints.hbm_headroom,
            "hbm_headroom_gib": res.constraints.hbm_headroom_gib,
            "host_headroom": res.constraints.host_headroom,
        },
        "chosen": ranges.row(res.chosen),
        **({"excluded": excluded_rows(res)} if res.excluded else {}),
        **({"runners_up": [ranges.row(c) for c in runners_up(res)]} if len(res.options) > 1 else {}),
        "ranked": [ranges.row(c) for c in res.ranked],
        "pareto": [ranges.row(c) for c in res.frontier],
        "range_basis": {c.option.hardware.name: ranges(c).basis for c in (res.chosen, *res.ranked)},
        "binding": [
            {"constraint": b.constraint, "reason": b.reason, "plan": as_dict(b.candidate)}
            for b in res.binding
        ],
        "alternatives": [
            {"change": a.change, "reason": a.reason, "plan": as_dict(a.candidate)} for a in res.alternatives
        ],
    }


def render(
    res: SearchResult,
    fmt: str,
    kw: dict[str, Any] | None = None,
    calibrated: set[str] | None = None,
    ranges: Ranges | None = None,
) -> str:
    ranges = ranges or Ranges(res=res)
    if fmt == "json":
        return dumps_json(result_json(res, kw, ranges))
    if fmt == "csv":
        rows = [{"section": "ranked", "rank": k + 1, **ranges.row(c)} for k, c in enumerate(res.ranked)]
        rows += [{"section": "pareto", "rank": k + 1, **ranges.row(c)} for k, c in enumerate(res.frontier)]
        return format_rows(rows, "csv")
    head = (lambda s: f"\n### {s}\n\n") if fmt == "markdown" else (lambda s: f"\n{s}\n")
    out = [head("chosen plan").lstrip("\n"), format_rows(chosen_rows(res, calibrated, ranges), fmt)]
    if res.excluded:
        out += [head("options left out"), format_rows(excluded_rows(res), fmt)]
    if len(res.options) > 1:
        out += [
            head("runners-up: the best plan of each other option"),
            format_rows(runner_up_rows(res, ranges), fmt),
        ]
    out += [
        head("ranked alternatives"),
        format_rows([{"rank": k + 1, **row(c, ranges)} for k, c in enumerate(res.ranked)], fmt),
    ]
    shown = thin_frontier(res.frontier)
    out += [
        head(
            f"Pareto frontier (cost vs time): {len(res.frontier)} plans, {len(shown)} shown ≥1% apart in cost"
        ),
        format_rows([row(c, ranges) for c in shown], fmt),
    ]
    if res.binding:
        out += [
            head("binding constraints"),
            format_rows([{"constraint": b.constraint, "why": b.reason} for b in res.binding], fmt),
        ]
    else:
        out += [
            head("binding constraints"),
            "none: the choice is the unconstrained optimum of the searched grid\n",
        ]
    if res.alternatives:
        out += [
            head("why close alternatives lost"),
            format_rows(
                [
                    {
                        "change": a.change,
                        "plan": f"{a.candidate.gpus} GPUs, {a.candidate.settings()}",
                        "why": a.reason,
                    }
                    for a in res.alternatives
                ],
                fmt,
            ),
        ]
    return "".join(out)


def write_plot(res: SearchResult, path: str, title: str) -> None:
    from planner.plots import plot_search

    plot_search(res, path, title=title)


def render_chosen(
    ctx: click.Context, res: SearchResult, kw: dict[str, Any], out_dir: str, image: str | None
) -> None:
    """`plan --render DIR`: the chosen plan through the very path of `render --plan plan.json`."""
    from launcher.commands import render as render_cmd
    from planner.plan_file import estimate_from_document

    if not image:
        raise EvaplanError(
            "--render needs --image", hint="add --image REGISTRY/evaclip:TAG (the trainer image)"
        )
    doc = to_jsonable(result_json(res, kw))
    est, _ = estimate_from_document(doc, None, "the plan", profiles_dirs(ctx))
    defaults = {
        p.name: p.get_default(ctx)
        for p in render_cmd.command.params
        if p.name
        and p.name not in render_cmd._ESTIMATE_NAMES
        and p.name not in ("plan_file", "pick", "out_dir", "to_stdout", "env", "env_not_secret", "job_name")
    }
    defaults["image"] = image
    render_cmd.render_estimate(est, out_dir, False, None, (), profiles_dirs(ctx), defaults)


@click.command("plan", cls=MultiValueCommand)
@search_options
@format_option(*REPORT_FORMATS)
@click.option(
    "--render",
    "render_dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Also write the chosen plan's bundle to this folder (as `render --plan` would; needs --image).",
)
@click.option("--image", default=None, help="Trainer image for --render, e.g. ghcr.io/acme/evaclip:1.0.")
@click.pass_context
def command(
    ctx: click.Context, fmt: str, plot_path: str | None, render_dir: str | None, image: str | None, **kw: Any
) -> None:
    """Search node count, ZeRO stage, offload, hpZ, checkpointing and micro-batch for the best plan.

    Prints the choice, the ranked alternatives, the cost-vs-time Pareto frontier, the constraints that
    bind the choice and why the plans next to it lost. Exit code 2 when no plan meets the constraints
    (the message names the closest plan and by how much it misses).
    """
    if render_dir and not image:
        raise EvaplanError(
            "--render needs --image", hint="add --image REGISTRY/evaclip:TAG (the trainer image)"
        )
    res = run_search(ctx, kw, show_progress=fmt in ("table", "markdown"))
    calibrated = (ctx.obj or {}).get("calibrated")
    click.echo(render(res, fmt, kw, calibrated, Ranges(profiles_dirs(ctx), res)), nl=False)
    if render_dir:
        render_chosen(ctx, res, kw, render_dir, image)
    if plot_path:
        write_plot(res, plot_path, f"evaplan plan: {res.model.name}, objective {res.objective}")
