"""`evaplan compare`: each option's best plan side by side, with figures relative to a baseline
("tensorwave-mi300x: 21% cheaper, 15% slower than aws-p5"), computed from the profiles."""

from __future__ import annotations

import math
from typing import Any

import click
import numpy as np

from launcher.commands._options import REPORT_FORMATS, MultiValueCommand, format_option, profiles_dirs
from launcher.commands.plan import (
    Ranges,
    best_per_option,
    calibration_note,
    excluded_rows,
    run_search,
    search_options,
)
from planner.errors import EvaplanError
from planner.intervals import RatioRange, gpu_ratio_uncertainty, ratio_range
from planner.report import dumps_json, format_rows
from planner.search import Candidate, SearchResult, fmt_duration, fmt_usd, rank_order
from planner.units import GIB
from planner.vectorized import available_pricings, make_option, run_at_price

PRICE_COLUMNS = (("on_demand", "on-demand"), ("spot", "spot"), ("committed", "committed"))


def prices_for(res: SearchResult, c: Candidate) -> dict[str, float] | None:
    """Total dollars of the same plan at every pricing its offering publishes (None: unpriced).

    `planner.estimate.estimate`'s prices (its order, its arithmetic: planner.vectorized.run_at_price)
    from the plan's searched step time, which agrees with estimate()'s to the byte
    (tests/search/test_agreement.py); spot includes the rework its interruptions cause. Not estimate()
    itself: sixteen of them were a fifth of `compare`'s time over the catalog."""
    off = c.option.offering
    if off is None:
        return None
    hw = c.option.hardware
    return {
        pricing: float(
            run_at_price(
                res.model,
                make_option(hw, off, pricing),
                res.training,
                c.plan.nodes,
                c.plan.global_batch,
                c.step_s,
            )["money"].total_usd
        )
        for pricing in available_pricings(off)
    }


def price_cells(res: SearchResult, c: Candidate) -> dict[str, str]:
    """'on-demand', 'spot', 'committed' cells: dollars, with the committed term; 'none published'."""
    prices = prices_for(res, c)
    off = c.option.offering
    cells = {}
    for key, label in PRICE_COLUMNS:
        if prices is None:
            cells[label] = "-"
        elif key not in prices:
            cells[label] = "none published"
        else:
            term = f" ({off.committed_term})" if key == "committed" and off is not None else ""
            cells[label] = fmt_usd(prices[key]) + term
    return cells


def price_fields(res: SearchResult, c: Candidate) -> dict[str, Any]:
    """The same as raw numbers for CSV/JSON: on_demand_usd, spot_usd, committed_usd, committed_term."""
    prices = prices_for(res, c) or {}
    off = c.option.offering
    out: dict[str, Any] = {
        f"{key}_usd": (round(prices[key], 2) if key in prices else None) for key, _ in PRICE_COLUMNS
    }
    out["committed_term"] = off.committed_term if off is not None and "committed" in prices else None
    return out


def _rel(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or not b else a / b - 1.0


def ratios(c: Candidate, base: Candidate) -> dict[str, RatioRange]:
    """c / baseline for cost (dollars, or GPU-hours where either is unpriced) and wall time, each with
    its range (planner/intervals.py ratio_range): one GPU, certain; two GPUs, widened by how far the
    model's GPU-to-GPU ratios sit from published same-software ones."""
    same = c.option.hardware.name == base.option.hardware.name
    priced = c.total_usd is not None and base.total_usd is not None
    a, b = (c.total_usd, base.total_usd) if priced else (c.gpu_hours, base.gpu_hours)
    assert a is not None and b is not None  # priced or GPU-hours, both always set
    return {"cost": ratio_range(a, b, same), "wall_time": ratio_range(c.wall_s, base.wall_s, same)}


def ratio_basis() -> str:
    """What the range of a cross-GPU ratio rests on."""
    u = gpu_ratio_uncertainty()
    return (
        f"× {math.exp(-u):.2f}–{math.exp(u):.2f} of the predicted ratio: how far the model's GPU-to-GPU "
        "ratios sit from published same-software ones (profiles/published_ratios.yaml; evaplan validate); "
        "one GPU's options share the model's error, so only their prices differ"
    )


def certainty(c: Candidate, base: Candidate) -> dict[str, bool]:
    """Whether c's cost and wall time differ from the baseline's beyond the ratio's range."""
    return {k: r.certain for k, r in ratios(c, base).items()}


def relation(c: Candidate, base: Candidate) -> str:
    """'21% cheaper (certain: cost ratio 0.55–0.91), 15% slower (not certain: time ratio 0.70–1.87)
    than aws-p5' (cost in dollars, or GPU-hours where unpriced)."""
    rr = ratios(c, base)
    parts = []
    priced = c.total_usd is not None and base.total_usd is not None
    dc = _rel(c.total_usd, base.total_usd) if priced else _rel(c.gpu_hours, base.gpu_hours)
    what = ("cheaper", "dearer") if priced else ("fewer GPU-hours", "more GPU-hours")
    if dc is not None:
        if abs(dc) < 0.005:
            parts.append("as cheap")
        else:
            word = what[0] if dc < 0 else what[1]
            parts.append(f"{abs(dc):.0%} {word} ({rr['cost'].describe('cost' if priced else 'GPU-hours')})")
    dt = _rel(c.wall_s, base.wall_s)
    if dt is not None:
        if abs(dt) < 0.005:
            parts.append("as fast")
        else:
            word = "faster" if dt < 0 else "slower"
            parts.append(f"{abs(dt):.0%} {word} ({rr['wall_time'].describe('time')})")
    return (
        ", ".join(parts) + (" as " if parts and parts[-1].startswith("as ") else " than ") + base.option.label
    )


def compare_rows(
    res: SearchResult, best: list[Candidate | None], base_k: int, ranges: Ranges | None = None
) -> list[dict[str, Any]]:
    """Human table rows: one per option."""
    ranges = ranges or Ranges(res=res)
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
                    **dict.fromkeys(
                        (
                            "wall",
                            "wall range",
                            "GPU-hours",
                            "on-demand",
                            "spot",
                            "committed",
                            "$/B samples",
                            "energy",
                            "CO2",
                        ),
                        "-",
                    ),
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
                "wall range": "–".join(fmt_duration(x) for x in ranges(c).of(c.wall_s)),
                "GPU-hours": f"{c.gpu_hours:,.0f}",
                **price_cells(res, c),
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


def compare_csv_rows(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """Machine rows of `compare_json`'s document: raw numbers, units in the column names."""
    rows = []
    for entry in doc["options"]:
        rel = entry.get("relative_to_baseline") or {}
        rows.append(
            {
                "option": entry["option"],
                "pricing": entry["pricing"],
                **(entry["plan"] or {}),
                **{k: v for k, v in entry.items() if k.endswith("_usd") or k == "committed_term"},
                "usd_per_billion_samples": entry.get("usd_per_billion_samples"),
                "cost_vs_baseline": rel.get("cost"),
                "wall_time_vs_baseline": rel.get("wall_time"),
                "energy_vs_baseline": rel.get("energy"),
            }
        )
    return rows


def compare_json(
    res: SearchResult,
    best: list[Candidate | None],
    base_k: int,
    kw: dict[str, Any] | None = None,
    ranges: Ranges | None = None,
) -> dict[str, Any]:
    ranges = ranges or Ranges(res=res)
    base = best[base_k]
    opts = []
    for k, c in enumerate(best):
        entry: dict[str, Any] = {
            "option": res.options[k].name,
            "pricing": res.options[k].pricing,
            "plan": ranges.row(c) if c else None,
            "range_basis": ranges(c).basis if c else None,
        }
        if c is not None:
            entry.update(price_fields(res, c))
            entry["usd_per_billion_samples"] = (
                c.total_usd / res.training.samples * 1e9 if c.total_usd is not None else None
            )
            if base is not None and k != base_k:
                entry["relative_to_baseline"] = {
                    "cost": _rel(c.total_usd, base.total_usd),
                    "gpu_hours": _rel(c.gpu_hours, base.gpu_hours),
                    "wall_time": _rel(c.wall_s, base.wall_s),
                    "energy": _rel(c.energy_kwh, base.energy_kwh),
                    "certain": certainty(c, base),
                    "ratio_range": {
                        k: {"ratio": r.ratio, "low": r.low, "high": r.high, "same_gpu": r.same_gpu}
                        for k, r in ratios(c, base).items()
                    },
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


def common_gpus(res: SearchResult, base_k: int, gpus: int | None, own: bool) -> tuple[int | None, str]:
    """The GPU count every option is compared on, and how it was set."""
    if gpus is not None:
        return gpus, f"{gpus} for every option (--gpus)"
    if own:
        return None, "each option's own best GPU count (--own-gpus); compare them per sample ($/B samples)"
    base, _ = best_per_option(res, None)
    b = base[base_k]
    if b is None:
        return None, "each option's own best GPU count (the baseline has no feasible plan)"
    return b.gpus, (
        f"{b.gpus} for every option: the baseline's best count ({res.options[base_k].label}); "
        "--gpus N for another, --own-gpus to let each choose"
    )


def best_line(res: SearchResult, best: list[Candidate | None], runners_up: int = 3) -> str:
    """'best for cost: tensorwave-mi300x ($141k); then ...': the options' plans in rank order."""
    shown = [c for c in best if c is not None]
    if not shown:
        return "best: no option has a feasible plan"
    order = rank_order(res.table, res.objective, np.array([c.index for c in shown], dtype=np.int64))
    by_index = {c.index: c for c in shown}
    ranked = [by_index[int(i)] for i in order]

    def figure(c: Candidate) -> str:
        if res.objective == "time":
            return fmt_duration(c.wall_s)
        if res.objective == "energy":
            return f"{c.energy_kwh / 1000:,.1f} MWh"
        return fmt_usd(c.total_usd) if c.total_usd is not None else f"{c.gpu_hours:,.0f} GPU-h"

    rest = ", ".join(f"{c.option.label} ({figure(c)})" for c in ranked[1 : 1 + runners_up])
    return f"best for {res.objective}: {ranked[0].option.label} ({figure(ranked[0])})" + (
        f"; then {rest}" if rest else ""
    )


@click.command("compare", cls=MultiValueCommand)
@search_options
@click.option(
    "--own-gpus",
    is_flag=True,
    help="Let each option choose its own GPU count (default: all on the baseline's best count).",
)
@click.option(
    "--baseline", default=None, help="Option the others are compared with (default: the first named)."
)
@format_option(*REPORT_FORMATS)
@click.pass_context
def command(
    ctx: click.Context, fmt: str, plot_path: str | None, baseline: str | None, own_gpus: bool, **kw: Any
) -> None:
    """Each option's best plan side by side: wall time, GPU-hours, dollars, dollars per billion samples,
    energy, CO2, memory headroom and settings, relative to a baseline option.

    Options are --offering profiles (priced; the hardware follows) and/or --hardware profiles
    (unpriced: GPU-hours). Each option's plan is the best for --objective under the constraints, on
    the same GPU count for every option (the baseline's best, or --gpus) unless --own-gpus. Offerings
    show on-demand, spot and committed (with its term) side by side, or "none published".
    """
    res = run_search(ctx, kw, show_progress=fmt in ("table", "markdown"))
    names = [o.name for o in res.options]
    left_out = {opt.name: why for opt, why in res.excluded}
    if baseline in left_out:
        raise EvaplanError(
            f"--baseline {baseline} was left out: {left_out[baseline]}",
            hint=f"choose another baseline: one of {', '.join(names)}",
        )
    if baseline is not None and baseline not in names:
        raise EvaplanError(
            f"--baseline {baseline} is not one of the options compared",
            hint=f"use one of: {', '.join(names)}",
        )
    base_k = names.index(baseline) if baseline else 0
    gpus, how = common_gpus(res, base_k, kw["gpus"], own_gpus)
    best, notes = best_per_option(res, gpus)
    ranges = Ranges(profiles_dirs(ctx), res)
    if fmt == "json":
        doc = compare_json(res, best, base_k, kw, ranges)
        doc["gpus"] = {"common": gpus, "how": how, "notes": notes}
        if res.excluded:
            doc["excluded"] = excluded_rows(res)
        click.echo(dumps_json(doc), nl=False)
    elif fmt == "csv":
        click.echo(format_rows(compare_csv_rows(compare_json(res, best, base_k, kw, ranges)), fmt), nl=False)
    else:
        click.echo(format_rows(compare_rows(res, best, base_k, ranges), fmt), nl=False)
        base = best[base_k]
        click.echo(f"GPUs: {how}")
        if len(res.options) > 2:
            click.echo(best_line(res, best))
        for note in notes:
            click.echo(f"note: {note}")
        for opt, why in res.excluded:
            click.echo(f"left out: {opt.label}: {why}")
        click.echo(f"calibration: {calibration_note(res, (ctx.obj or {}).get('calibrated'))}")
        if base is not None:
            for k, c in enumerate(best):
                if k != base_k and c is not None:
                    click.echo(f"{res.options[k].label}: {relation(c, base)}")
            if len({c.option.hardware.name for c in best if c is not None}) > 1:
                click.echo(f"ratios across GPUs: {ratio_basis()}")
            for hw in dict.fromkeys(c.option.hardware.name for c in best if c is not None):
                c = next(x for x in best if x is not None and x.option.hardware.name == hw)
                click.echo(f"{hw}: {ranges(c).basis}")
    if plot_path:
        from planner.plots import plot_search

        plot_search(
            res,
            plot_path,
            title=f"evaplan compare: {res.model.name}, objective {res.objective}",
            chosen=[c for c in best if c is not None],
        )
