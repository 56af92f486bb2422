"""`evaplan serve`: embedding throughput, latency, memory and cost per million of EVA-CLIP encoders,
with published accuracy beside the cost and hybrid routing between a small and a large encoder."""

from __future__ import annotations

from typing import Any

import click

from launcher.commands._options import (
    OFFERING_SET_HELP,
    FiniteFloat,
    MultiValueCommand,
    attention_option,
    format_option,
    limited_float,
    offering_filter_options,
    plot_option,
    profiles_dirs,
    stack_option,
)
from planner import profiles as prof
from planner.calibration import calibrated_hardware
from planner.errors import EvaplanError
from planner.intervals import TimeRange, serving_range
from planner.params import count_params
from planner.report import dumps_json, format_rows
from planner.serve import PRECISIONS, mark_pareto, route, serve_point
from planner.serve_report import (
    best_lines,
    flat_rows,
    format_table,
    json_doc,
    notes,
    plot_cost_vs_accuracy,
    route_rows,
    table_rows,
)


class _ServeCommand(MultiValueCommand):
    multi_flags = ("--model", "--hardware", "--offering")


@click.command("serve", cls=_ServeCommand)
@click.option(
    "--model",
    "models",
    required=True,
    multiple=True,
    help="Model profile; repeatable, or several after one flag.",
)
@click.option(
    "--hardware",
    "hardware",
    multiple=True,
    help="Hardware profile (no prices); repeatable, or several after one flag.",
)
@click.option(
    "--offering",
    "offerings",
    multiple=True,
    help="Priced offering, e.g. aws-p5; repeatable, or several after one flag. "
    f"Or a set: {OFFERING_SET_HELP.replace('/--pricing', '')}.",
)
@offering_filter_options
@click.option("--batch", type=click.IntRange(1, 65536), default=None, help="Images (and texts) per batch.")
@click.option(
    "--p99-ms",
    type=limited_float("p99_ms", min_open=True),
    default=None,
    help="Latency target per image batch: picks the largest batch (and TP) that meets it.",
)
@click.option(
    "--rps",
    type=limited_float("rps", min_open=True),
    default=None,
    help="Images per second to serve: sizes the fleet.",
)
@click.option("--precision", type=click.Choice(PRECISIONS), default="bf16", show_default=True)
@stack_option(
    "Software stack: eager PyTorch, eager under autocast with fp32 weights (amp), torch.compile, fused kernels."
)
@attention_option()
@click.option(
    "--route-large-share",
    type=FiniteFloat(0, 1),
    default=None,
    help="Hybrid routing: share of images sent to the larger of exactly two --model.",
)
@click.option(
    "--route-mode",
    type=click.Choice(["cascade", "split"]),
    default="cascade",
    show_default=True,
    help="cascade: every image through the small encoder, the share also through the large; "
    "split: the share goes to the large encoder only.",
)
@format_option("table", "json", "csv")
@plot_option("PNG: cost per million images vs accuracy.")
@click.option(
    "--no-calibration", is_flag=True, help="Ignore the hardware's calibration (`evaplan calibrate`)."
)
@click.pass_context
def command(
    ctx: click.Context,
    models: tuple[str, ...],
    hardware: tuple[str, ...],
    offerings: tuple[str, ...],
    batch: int | None,
    p99_ms: float | None,
    rps: float | None,
    precision: str,
    stack: str,
    attention: str,
    route_large_share: float | None,
    route_mode: str,
    fmt: str,
    plot_path: str | None,
    no_calibration: bool,
    vendor: str | None,
    gpu: str | None,
    provider: str | None,
) -> None:
    """Serving figures of EVA-CLIP encoders on hardware or priced offerings.

    For each model and each --hardware/--offering: images and texts per second per GPU at a batch,
    time per batch, memory and GPUs per replica (tensor parallel when one GPU cannot hold it),
    GPU-hours, energy and $ per million embeddings, the fleet for --rps, and the published
    zero-shot accuracy with the cost/accuracy Pareto front. Exit code 2 when a request cannot be met.
    """
    dirs = profiles_dirs(ctx)
    names = list(dict.fromkeys(models))
    from launcher.commands.plan import offering_names_for

    filters = {"vendor": vendor, "gpu": gpu, "provider": provider}
    offerings = tuple(offering_names_for(ctx, list(offerings), list(hardware), filters))
    if not hardware and not offerings:
        raise EvaplanError(
            "serve needs --hardware or --offering", hint="e.g. --offering aws-p5 or --hardware h100-sxm"
        )
    if route_large_share is not None and len(names) != 2:
        raise EvaplanError(
            f"--route-large-share needs exactly two models (a small and a large encoder), got {len(names)}",
            hint="e.g. --model eva02-clip-b16 eva-clip-18b --route-large-share 0.1",
        )
    specs = [prof.load_model(n, dirs) for n in names]
    targets = []
    for name in offerings:
        off = prof.load_offering(name, dirs)
        targets.append((prof.load_hardware(off.hardware, dirs), off))
    for name in hardware:
        targets.append((prof.load_hardware(name, dirs), None))
    # Everything is computed before anything is printed or written: an error leaves no half output.
    points = []
    for hw, off in targets:
        # One time model for training and serving: the same compute scale (a calibration's, else the
        # one fitted on the published runs) scales serving's device rates (planner/inference_time.py).
        hw = calibrated_hardware(hw, dirs, use=not no_calibration).hardware
        for m in specs:
            points.append(
                serve_point(
                    m,
                    hw,
                    off,
                    precision=precision,
                    batch=batch,
                    p99_ms=p99_ms,
                    rps=rps,
                    stack=stack,
                    attention=attention,
                )
            )
    points = mark_pareto(points)
    totals = {m.name: count_params(m).total for m in specs}
    ranges = {(p.model, p.target): serving_range(totals[p.model], p.stack) for p in points}
    routes = []
    if route_large_share is not None:
        for tgt in dict.fromkeys(p.target for p in points):
            a, b = [p for p in points if p.target == tgt]
            small, large = sorted((a, b), key=lambda p: p.images_per_s_per_gpu, reverse=True)
            routes.append(route(small, large, route_large_share, route_mode))
    if plot_path:
        plot_cost_vs_accuracy(points, plot_path)
    if fmt == "json":
        click.echo(dumps_json(json_with_ranges(points, routes, ranges)), nl=False)
    elif fmt == "csv":
        click.echo(format_rows(csv_with_ranges(points, ranges), "csv"), nl=False)
    else:
        click.echo(format_table(table_rows(points)), nl=False)
        for line in notes(points) + best_lines(points) + range_lines(points, ranges):
            click.echo(f"  {line}")
        if routes:
            click.echo("")
            click.echo(format_table(route_rows(routes)), nl=False)
            click.echo(
                "  speedup = GPU-time per image of the large encoder alone / blended; "
                "the accuracy of routing depends on the router and is not modelled."
            )
    if plot_path:
        click.echo(f"wrote {plot_path}", err=True)


Ranges = dict[tuple[str, str], TimeRange]  # (model, target) → its range


def json_with_ranges(points: list, routes: list, ranges: Ranges) -> dict[str, Any]:
    """serve's JSON document with each point's `range`."""
    doc = json_doc(points, routes)
    for d, p in zip(doc["points"], points, strict=True):
        d["range"] = range_fields(ranges[(p.model, p.target)])
    return doc


def csv_with_ranges(points: list, ranges: Ranges) -> list[dict[str, Any]]:
    """serve's CSV rows with images/s low/high and the time ratios of each point's range."""
    rows = flat_rows(points)
    for row, p in zip(rows, points, strict=True):
        r = ranges[(p.model, p.target)]
        row.update(
            images_per_s_per_gpu_low=p.images_per_s_per_gpu / r.high,
            images_per_s_per_gpu_high=p.images_per_s_per_gpu / r.low,
            time_ratio_low=r.low,
            time_ratio_high=r.high,
            range_comparable_runs=r.runs,
        )
    return rows


def range_fields(r: TimeRange) -> dict[str, object]:
    """A serving point's range for JSON: time (and $ per million) × low–high, images/s ÷ high–low."""
    return {
        "time_ratio_low": r.low,
        "time_ratio_high": r.high,
        "comparable_runs": r.runs,
        "basis": r.basis,
    }


def range_lines(points: list, ranges: Ranges) -> list[str]:
    """One line per model: its range (the same on every GPU: it depends on the model's class) and what it
    rests on."""
    out = []
    for model in dict.fromkeys(p.model for p in points):
        p = next(x for x in points if x.model == model)
        r = ranges[(p.model, p.target)]
        out.append(
            f"range of {model}: batch time and $ per million × {r.low:.2f}–{r.high:.2f} (img/s ÷ the same), "
            f"{r.basis}"
        )
    return out
