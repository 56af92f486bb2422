"""`evaplan validate`: the planner against published training runs and inference measurements it did
not see being written.

Prints, for every run in profiles/published_runs.yaml (or --runs FILE), published vs predicted
samples/s per GPU, wall time, GPU-hours, memory and whether the layout fits, with the error in %;
then median and worst |error| over all runs, the fit half and the held-out half (planner/validation.py).
Then serving apart: for every measurement in profiles/published_serving.yaml (or --serving FILE),
published vs `evaplan serve`'s predicted latency or images/s, and the same summary per half
(planner/serving_validation.py). Then the published same-software GPU-to-GPU ratios
(profiles/published_ratios.yaml, or --ratios FILE) beside the model's (planner/gpu_ratios.py).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

from launcher.commands._options import REPORT_FORMATS, format_option
from planner.report import dumps_json, format_rows

F = TypeVar("F", bound=Callable[..., Any])


def _lines(summary: Any) -> str:
    iv = summary.intervals
    f_all, t_all = summary.fits["all"]
    f_ho, t_ho = summary.fits["held-out"]
    out = [
        f"trained layouts predicted to fit: {f_all} of {t_all} (held-out half: {f_ho} of {t_ho})"
        + (f"; not fitting: {', '.join(summary.not_fitting)}" if summary.not_fitting else ""),
        f"time interval (fit half, {iv.n_fit} runs): published / predicted time, a {iv.coverage:.0%} range "
        f"per class of prediction (binding, model size, stack) from the comparable fit-half runs "
        f"(all runs: {iv.ratio_low:.2f}–{iv.ratio_high:.2f}); held-out runs inside their class's range: "
        f"{iv.held_out_inside} of {iv.n_held_out}",
        f"runtime reserve the fit half's trained layouts leave room for: {summary.reserve_bound_gib:.2f} GiB "
        f"per GPU (tightest: {summary.reserve_bound_run})",
        f"activation memory factor fitted on the fit half's measured peaks ({summary.activation_factor_runs} "
        f"run(s)): {summary.activation_factor:.3f} (planner/memory.py ACTIVATION_MEMORY_FACTOR)",
    ]
    floor = summary.worst_error_floor or {}
    if floor:
        out.append(
            "least worst samples/s |error| any model of these inputs can reach: "
            f"{floor['all']:.1%} (fit half {floor['fit']:.1%}, held-out half {floor['held-out']:.1%}; "
            f"{len(summary.spread_groups)} group(s) of runs with identical inputs and different figures)"
        )
    return "\n".join(out) + "\n"


def _data_file_option(flag: str, dest: str, what: str, bundled: str) -> Callable[[F], F]:
    """`flag FILE`: a data file in the bundled format instead of profiles/`bundled`."""
    return click.option(
        flag,
        dest,
        type=click.Path(exists=True, dir_okay=False),
        default=None,
        help=f"A {what} YAML file in the bundled format (default: profiles/{bundled}).",
    )


@click.command("validate")
@_data_file_option("--runs", "runs_file", "published-runs", "published_runs.yaml")
@_data_file_option("--serving", "serving_file", "published-serving", "published_serving.yaml")
@_data_file_option("--ratios", "ratios_file", "published GPU-ratios", "published_ratios.yaml")
@click.option(
    "--gpu-ratios",
    "only_ratios",
    is_flag=True,
    help="Print only the GPU-to-GPU ratios: published same-software ranges vs the model's (with --format csv: "
    "their rows).",
)
@format_option(*REPORT_FORMATS)
def command(
    runs_file: str | None, serving_file: str | None, ratios_file: str | None, only_ratios: bool, fmt: str
) -> None:
    """Published vs predicted for every bundled published training run and inference measurement:
    error in %, median and worst |error|, fit half and held-out half, training and serving reported
    apart; then published GPU-to-GPU ratios vs the model's. See docs/validation.md."""
    from planner import gpu_ratios as g
    from planner import serving_validation as sv
    from planner import validation as v

    sv.load_measurements(serving_file)  # first: a bad --serving file fails at once
    checks = v.check_all(runs_file, serving_path=serving_file)
    summary = v.summarize(checks, ratios_file, serving_file)
    ratios = summary.gpu_ratios
    # Serving at the one compute scale, fitted on both fit halves together (planner/validation.py).
    serving = sv.serving_checks(summary.compute_scale, path=serving_file)
    serving_summary = sv.serving_summary(serving)
    if fmt == "json":
        doc = {
            "runs": v.run_rows(checks),
            "summary": v.summary_json(summary),
            "serving": {"measurements": sv.run_rows(serving), "summary": sv.summary_json(serving_summary)},
            "gpu_ratios": g.ratio_rows(ratios),
        }
        click.echo(dumps_json(doc), nl=False)
        return
    if only_ratios:
        if fmt == "csv":
            click.echo(format_rows(g.ratio_rows(ratios), "csv"), nl=False)
        else:
            click.echo(format_rows(g.ratio_table_rows(ratios), fmt), nl=False)
            click.echo(g.ratio_line(ratios))
        return
    if fmt == "csv":
        # One header for both: a training row fills `run`, a serving row `measurement`.
        click.echo(format_rows(v.run_rows(checks) + sv.run_rows(serving), "csv"), nl=False)
        return
    click.echo(format_rows(v.table_rows(checks), fmt), nl=False)
    click.echo("")
    click.echo(format_rows(v.summary_rows(summary), fmt), nl=False)
    click.echo("")
    click.echo(_lines(summary), nl=False)
    spread = v.spread_rows(summary)
    if spread:
        click.echo("")
        click.echo(
            "runs the model cannot tell apart (identical inputs, different published samples/s): one "
            "prediction p for all, least worst |p/published − 1| = (max − min) / (max + min)"
        )
        click.echo(format_rows(spread, fmt), nl=False)
    click.echo("")
    click.echo(
        "serving: `evaplan serve`'s prediction (at the compute scale fitted on the training and serving "
        "fit halves together) for published inference measurements, one GPU each; error = predicted / "
        "published images/s − 1 (a latency row: published ms / predicted ms − 1)"
    )
    click.echo(format_rows(sv.table_rows(serving), fmt), nl=False)
    click.echo("")
    click.echo(format_rows(sv.summary_rows(serving_summary), fmt), nl=False)
    siv = summary.serving_intervals
    if siv is not None:
        click.echo(
            f"serve's ranges (fit half, {siv.n_fit} measurements): published / predicted batch time, a "
            f"{siv.coverage:.0%} range per class from the comparable fit-half measurements (all: "
            f"{siv.ratio_low:.2f}–{siv.ratio_high:.2f}); held-out measurements inside their class's range: "
            f"{siv.held_out_inside} of {siv.n_held_out}"
        )
    click.echo("")
    click.echo(
        "GPU-to-GPU ratios: published same-software ranges (profiles/published_ratios.yaml) vs the model's "
        "at a CLIP layout (the source's own, or a ViT-H/14 node for MLPerf rows)"
    )
    click.echo(format_rows(g.ratio_table_rows(ratios), fmt), nl=False)
    click.echo(g.ratio_line(ratios))
