"""`evaplan compare`: each option's best plan side by side, with figures relative to a baseline
("tensorwave-mi300x: 21% cheaper, 15% slower than aws-p5"), computed from the profiles."""

from __future__ import annotations

from typing import Any

import click

from launcher.commands.plan import MultiValueCommand, run_search, search_options
from planner.errors import EvaplanError
from planner.report import dumps_json, format_rows
from planner.search import Candidate, SearchResult, as_dict, candidate, fmt_duration, fmt_usd, top_order

GIB = 2**30


def best_per_option(res: SearchResult) -> list[Candidate | None]:
    """The best feasible plan of each option for the objective (None where none is feasible)."""
    t = res.table
    out: list[Candidate | None] = []
    for k in range(len(res.options)):
        idx = (res.feasible & (t["option"] == k)).nonzero()[0]
        out.append(
            candidate(t, int(top_order(t, res.objective, idx, 1)[0]), res.options) if len(idx) else None
        )
    return out


def _rel(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or not b else a / b - 1.0


def relation(c: Candidate, base: Candidate) -> str:
    """'21% cheaper, 15% slower than aws-p5' (cost in dollars, or GPU-hours where unpriced)."""
    parts = []
    priced = c.total_usd is not None and base.total_usd is not None
    dc = _rel(c.total_usd, base.total_usd) if priced else _rel(c.gpu_hours, base.gpu_hours)
    what = ("cheaper", "dearer") if priced else ("fewer GPU-hours", "more GPU-hours")
    if dc is not None:
        parts.append("as cheap" if abs(dc) < 0.005 else f"{abs(dc):.0%} {what[0] if dc < 0 else what[1]}")
    dt = _rel(c.wall_s, base.wall_s)
    if dt is not None:
        parts.append("as fast" if abs(dt) < 0.005 else f"{abs(dt):.0%} {'faster' if dt < 0 else 'slower'}")
    return (
        ", ".join(parts) + (" as " if parts and parts[-1].startswith("as ") else " than ") + base.option.label
    )


def compare_rows(res: SearchResult, best: list[Candidate | None], base_k: int) -> list[dict[str, Any]]:
    base = best[base_k]
    samples = res.training.samples
    rows = []
    for k, c in enumerate(best):
        opt = res.options[k]
        if c is None:
            rows.append(
                {
                    "option": opt.label,
                    "hardware": opt.hardware.name,
                    "GPUs": "-",
                    "settings": "no feasible plan",
                    "wall": "-",
                    "GPU-hours": "-",
                    "cost": "-",
                    "$/B samples": "-",
                    "energy": "-",
                    "CO2": "-",
                    "HBM headroom": "-",
                    "vs baseline": "-",
                }
            )
            continue
        rows.append(
            {
                "option": opt.label,
                "hardware": opt.hardware.name,
                "GPUs": c.gpus,
                "settings": c.settings(),
                "wall": fmt_duration(c.wall_s),
                "GPU-hours": f"{c.gpu_hours:,.0f}",
                "cost": fmt_usd(c.total_usd) if c.total_usd is not None else "-",
                "$/B samples": fmt_usd(c.total_usd / samples * 1e9) if c.total_usd is not None else "-",
                "energy": f"{c.energy_kwh / 1000:,.1f} MWh",
                "CO2": f"{c.co2_kg / 1000:,.1f} t" if c.co2_kg is not None else "-",
                "HBM headroom": f"{(c.hbm_bytes - c.gpu_total_bytes) / GIB:.1f} GiB",
                "vs baseline": "baseline"
                if k == base_k
                else (relation(c, base) if base is not None else "-"),
            }
        )
    return rows


def compare_json(
    res: SearchResult, best: list[Candidate | None], base_k: int, kw: dict[str, Any] | None = None
) -> dict[str, Any]:
    base = best[base_k]
    opts = []
    for k, c in enumerate(best):
        entry: dict[str, Any] = {
            "option": res.options[k].name,
            "pricing": res.options[k].pricing,
            "plan": as_dict(c) if c else None,
        }
        if c is not None:
            entry["usd_per_billion_samples"] = (
                c.total_usd / res.training.samples * 1e9 if c.total_usd is not None else None
            )
            if base is not None and k != base_k:
                entry["relative_to_baseline"] = {
                    "cost": _rel(c.total_usd, base.total_usd),
                    "gpu_hours": _rel(c.gpu_hours, base.gpu_hours),
                    "wall_time": _rel(c.wall_s, base.wall_s),
                    "energy": _rel(c.energy_kwh, base.energy_kwh),
                    "summary": relation(c, base),
                }
        opts.append(entry)
    return {
        "model": res.model.name,
        "objective": res.objective,
        "baseline": res.options[base_k].name,
        "samples": res.training.samples,
        "training": res.training,
        "no_calibration": bool((kw or {}).get("no_calibration", False)),
        "constraints": {
            "batch_tolerance": res.constraints.batch_tolerance,
            "hbm_headroom": res.constraints.hbm_headroom,
            "hbm_headroom_gib": res.constraints.hbm_headroom_gib,
            "host_headroom": res.constraints.host_headroom,
        },
        "options": opts,
    }


@click.command("compare", cls=MultiValueCommand)
@search_options
@click.option(
    "--baseline", default=None, help="Option the others are compared with (default: the first named)."
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "json", "csv", "markdown"]),
    default="table",
    show_default=True,
)
@click.pass_context
def command(ctx: click.Context, fmt: str, plot_path: str | None, baseline: str | None, **kw: Any) -> None:
    """Each option's best plan side by side: wall time, GPU-hours, dollars, dollars per billion samples,
    energy, CO2, memory headroom and settings, relative to a baseline option.

    Options are --offering profiles (priced; the hardware follows) and/or --hardware profiles
    (unpriced: GPU-hours). Each option's plan is the best for --objective under the constraints.
    """
    res = run_search(ctx, kw)
    best = best_per_option(res)
    names = [o.name for o in res.options]
    if baseline is not None and baseline not in names:
        raise EvaplanError(
            f"--baseline {baseline} is not one of the options compared",
            hint=f"use one of: {', '.join(names)}",
        )
    base_k = names.index(baseline) if baseline else 0
    if fmt == "json":
        click.echo(dumps_json(compare_json(res, best, base_k, kw)), nl=False)
    else:
        click.echo(format_rows(compare_rows(res, best, base_k), fmt), nl=False)
        base = best[base_k]
        if fmt == "table" and base is not None:
            for k, c in enumerate(best):
                if k != base_k and c is not None:
                    click.echo(f"{res.options[k].label}: {relation(c, base)}")
    if plot_path:
        from planner.plots import plot_search

        plot_search(
            res,
            plot_path,
            title=f"evaplan compare: {res.model.name}, objective {res.objective}",
            chosen=[c for c in best if c is not None],
        )
