"""What `evaplan serve` prints: rows of serving figures, routing rows, and the cost-vs-accuracy PNG.

Table rows are rounded for reading; JSON and CSV rows carry the raw numbers (CSV one flat row per
point, JSON the whole structure with sources).
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from planner.errors import EvaplanError
from planner.plot_file import check_plot_path, save_png
from planner.serve import Route, ServePoint
from planner.spec import PRICINGS
from planner.units import GIB

SHORT = {"on_demand": "on-dem", "spot": "spot", "committed": "commit", "on_prem": "on-prem"}


def _price(p: ServePoint, pricing: str) -> float | None:
    return next((x.usd_per_m_images for x in p.prices if x.pricing == pricing), None)


def _acc(x: float | None) -> str:
    return f"{x:.1f}" if x is not None else "—"


def _usd(x: float | None) -> str:
    if x is None:
        return "—"
    return f"{x:,.2f}" if x >= 0.995 else f"{x:,.4f}"


def _n(k: int, what: str) -> str:
    return f"{k:,} {what}" + ("" if k == 1 else "s")


def _num(x: float) -> str:
    """Three significant figures at least, thousands separated."""
    return f"{x:,.0f}" if x >= 100 else f"{x:.3g}"


def _dur(s: float) -> str:
    return f"{s * 1e3:,.1f} ms" if s < 1 else f"{s:,.1f} s"


def table_rows(points: list[ServePoint]) -> list[dict[str, Any]]:
    """One readable row per model × hardware/offering; price columns only for prices some row has."""
    have = [pr for pr in PRICINGS if any(_price(p, pr) is not None for p in points)]
    rows = []
    for p in points:
        r: dict[str, Any] = {
            "model": p.model,
            "on": p.target,
            "TP": str(p.tp),
            "batch": f"{p.batch:,}",
            "batch time": _dur(p.image.total_s),
            "img/s/GPU": _num(p.images_per_s_per_gpu),
            "txt/s/GPU": _num(p.texts_per_s_per_gpu),
            "GiB/GPU": f"{p.memory.total_bytes / GIB:,.1f}",
            "GPU-h/M": _num(p.gpu_hours_per_m_images),
            "kWh/M": _num(p.kwh_per_m_images),
        }
        for pr in have:
            r[f"$/M {SHORT[pr]}"] = _usd(_price(p, pr))
        if have:
            od = next((x for x in p.prices if x.pricing in ("on_demand", "on_prem")), None)
            r["$/M txt"] = _usd(od.usd_per_m_texts if od else None)
        if p.fleet is not None:
            r["fleet GPUs"] = f"{p.fleet.gpus:,}"
        r["IN-1K %"] = _acc(p.imagenet_top1)
        r["27-avg %"] = _acc(p.avg27_top1)
        r["Pareto"] = "yes" if p.pareto else ""
        rows.append(r)
    return rows


def flat_rows(points: list[ServePoint]) -> list[dict[str, Any]]:
    """One CSV row per point, raw numbers, units in the column names."""
    rows = []
    for p in points:
        r: dict[str, Any] = {
            "model": p.model,
            "target": p.target,
            "hardware": p.hardware,
            "offering": p.offering or "",
            "precision": p.precision,
            "tp": p.tp,
            "batch": p.batch,
            "image_batch_s": p.image.total_s,
            "text_batch_s": p.text.total_s,
            "images_per_s_per_gpu": p.images_per_s_per_gpu,
            "texts_per_s_per_gpu": p.texts_per_s_per_gpu,
            "memory_per_gpu_bytes": p.memory.total_bytes,
            "weights_per_gpu_bytes": p.memory.weights_bytes,
            "activations_per_gpu_bytes": p.memory.activations_bytes,
            "gpu_hours_per_m_images": p.gpu_hours_per_m_images,
            "gpu_hours_per_m_texts": p.gpu_hours_per_m_texts,
            "kwh_per_m_images": p.kwh_per_m_images,
        }
        for pr in PRICINGS:
            r[f"usd_per_m_images_{pr}"] = _price(p, pr) if _price(p, pr) is not None else ""
        r["fleet_gpus"] = p.fleet.gpus if p.fleet else ""
        r["fleet_nodes"] = p.fleet.nodes if p.fleet else ""
        r["imagenet_top1"] = p.imagenet_top1 if p.imagenet_top1 is not None else ""
        r["avg27_top1"] = p.avg27_top1 if p.avg27_top1 is not None else ""
        r["pareto"] = p.pareto
        rows.append(r)
    return rows


def format_table(rows: list[dict[str, Any]]) -> str:
    """A plain-text table of already formatted cells (no number re-parsing: "11,113" stays so)."""
    from tabulate import tabulate

    if not rows:
        return ""
    headers = list(rows[0])
    body = [[r[h] for h in headers] for r in rows]
    # Names left, figures right.
    align = ["left" if h in ("model", "on", "small → large", "mode") else "right" for h in headers]
    return tabulate(body, headers=headers, tablefmt="simple", disable_numparse=True, colalign=align) + "\n"


def json_doc(points: list[ServePoint], routes: list[Route]) -> dict[str, Any]:
    return {"points": [asdict(p) for p in points], "routes": [asdict(r) for r in routes]}


def notes(points: list[ServePoint]) -> list[str]:
    """The lines under the table: what was chosen, fleets, and how figures are defined."""
    out = []
    chosen: dict[str, list[str]] = {}
    for p in points:
        for c in p.chosen:
            chosen.setdefault(c, []).append(f"{p.model} on {p.target}")
    for c, who in chosen.items():
        out.append(f"{c}: " + ("every row" if len(who) == len(points) > 1 else ", ".join(who)))
    for p in points:
        if p.fleet is not None:
            f = p.fleet
            out.append(
                f"{p.model} on {p.target}: {f.rps:,g} images/s needs {_n(f.replicas, 'replica')} × TP {p.tp} = "
                f"{_n(f.gpus, 'GPU')} ({_n(f.nodes, 'node')}), {f.utilization:.0%} busy"
            )
    prec = ", ".join(sorted({p.precision for p in points}))
    how = ", ".join(sorted({f"{p.stack} stack, {p.attention} attention" for p in points}))
    out.append(f"{prec} weights, {how}; GPU-h, kWh and $ per million images ($/M txt: per million texts).")
    out.append(
        "batch time: one image batch, operation by operation (GEMMs, attention, memory-bound work; host"
    )
    out.append(
        "time where it is longer) + TP all-reduces, no queueing; img/s and txt/s per GPU at that batch."
    )
    return out


def best_lines(points: list[ServePoint], runners_up: int = 3) -> list[str]:
    """Per model served on several targets: the cheapest per million images and the next ones (in
    dollars where every target is priced, else GPU-hours)."""
    out = []
    for model in dict.fromkeys(p.model for p in points):
        mine = [p for p in points if p.model == model]
        units = {p.cost_per_m_images()[1] for p in mine}
        if len(mine) < 2 or len(units) > 1:
            continue
        unit = units.pop()
        ranked = sorted(mine, key=lambda p: p.cost_per_m_images()[0])

        def cost(p: ServePoint, unit: str = unit) -> str:
            x = p.cost_per_m_images()[0]
            return f"${_usd(x)}" if unit == "USD" else f"{x:,.3f} GPU-h"

        rest = ", ".join(f"{p.target} ({cost(p)})" for p in ranked[1 : 1 + runners_up])
        out.append(
            f"cheapest per million images for {model}: {ranked[0].target} ({cost(ranked[0])}); then {rest}"
        )
    return out


def route_rows(routes: list[Route]) -> list[dict[str, Any]]:
    rows = []
    for r in routes:
        rows.append(
            {
                "on": r.target,
                "small → large": f"{r.small} → {r.large}",
                "mode": r.mode,
                "share large": f"{r.share:.0%}",
                "large/small cost": f"{r.cost_ratio:,.1f}×",
                "img/s/GPU blended": f"{r.blended_images_per_s_per_gpu:,.1f}",
                "$/M img blended": _usd(r.blended_usd_per_m_images),
                "$/M img large alone": _usd(r.large_usd_per_m_images),
                "speedup vs large": f"{r.speedup_vs_large:,.2f}×",
                "share for 7× / 8×": " / ".join(
                    f"{v:.1%}" if v is not None else "none" for v in r.share_for_speedup.values()
                ),
            }
        )
    return rows


# ----------------------------------------------------------------------------------- plot
def _pyplot() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise EvaplanError("--plot needs matplotlib", hint="pip install 'evaplan[plot]'") from None
    return plt


def plot_cost_vs_accuracy(points: list[ServePoint], path: str) -> None:
    """$ (or GPU-hours) per million images vs zero-shot ImageNet-1K top-1, one colour per
    hardware/offering, its Pareto front as a line; written atomically (temp file + rename)."""
    check_plot_path(path)
    shown = [p for p in points if p.imagenet_top1 is not None]
    if not shown:
        raise EvaplanError(
            "--plot: none of the models has a published ImageNet-1K accuracy",
            hint="add published.imagenet_zero_shot_top1 to the model profile",
        )
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(9, 6))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    units = {p.cost_per_m_images()[1] for p in shown}
    for k, tgt in enumerate(dict.fromkeys(p.target for p in shown)):
        col = colors[k % len(colors)]
        pts = [p for p in shown if p.target == tgt]
        ax.scatter([p.cost_per_m_images()[0] for p in pts], [p.imagenet_top1 for p in pts], color=col, s=30)
        for p in pts:
            ax.annotate(
                p.model,
                (p.cost_per_m_images()[0], p.imagenet_top1),
                fontsize=7,
                xytext=(4, 3),
                textcoords="offset points",
            )
        front = sorted((p for p in pts if p.pareto), key=lambda p: p.cost_per_m_images()[0])
        if front:
            ax.step(
                [p.cost_per_m_images()[0] for p in front],
                [p.imagenet_top1 for p in front],
                where="post",
                color=col,
                label=f"{tgt} Pareto front ({pts[0].cost_per_m_images()[1]})",
            )
    ax.set_xscale("log")
    unit = units.pop() if len(units) == 1 else "USD, or GPU-hours where unpriced"
    ax.set_xlabel(f"cost per million images ({unit})")
    ax.set_ylabel("zero-shot ImageNet-1K top-1 (%)")
    prec = ", ".join(sorted({p.precision for p in shown}))
    ax.set_title(f"EVA-CLIP image embedding: cost vs accuracy ({prec})")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_png(fig, plt, path)
