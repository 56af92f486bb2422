"""PNG plots of a search (matplotlib, the optional `plot` extra): cost vs wall time with each option's
Pareto frontier, and the per-GPU memory of the chosen plans as stacked bars (the terms of estimate())."""

from __future__ import annotations

from typing import Any

import numpy as np

from planner.errors import EvaplanError
from planner.estimate import estimate
from planner.plot_file import save_png
from planner.search import DAY_S, Candidate, SearchResult, objective_column
from planner.units import GIB

# Points drawn per option: a deterministic, evenly spaced sample of the feasible candidates (a PNG of
# a million dots says no more than one of a few thousand).
MAX_POINTS_PER_OPTION = 4000
MEMORY_GROUPS = {
    "params + grads (16-bit)": ("params_16bit", "grads_16bit"),
    "fp32 master + grads + optimizer": ("grads_fp32", "master_params_fp32", "optimizer_states_fp32"),
    "ZeRO-3 live layer + margin": ("zero3_largest_layer", "deepspeed_estimator_margin"),
    "buffers + hpZ shard": ("zero_buffers", "hpz_secondary_shard"),
    "activations": ("activations_vision", "activations_text"),
    "CLIP loss": ("clip_loss",),
    "runtime reserved": ("runtime_reserved",),
}


def _pyplot() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise EvaplanError(
            "--plot needs matplotlib",
            hint="pip install matplotlib into evaplan's environment (from a checkout: pip install -e '.[plot]')",
        ) from None
    return plt


def memory_breakdown_gib(res: SearchResult, c: Candidate) -> dict[str, float]:
    """The chosen plan's per-GPU memory by group, from the scalar estimate (same bytes as the search)."""
    training = res.training.model_copy(update={"global_batch": c.plan.global_batch})
    est = estimate(res.model, c.option.hardware, c.plan, training, c.option.offering)
    terms = est.memory.gpu_terms
    return {g: sum(terms.get(k, 0.0) for k in keys) / GIB for g, keys in MEMORY_GROUPS.items()}


def plot_search(res: SearchResult, path: str, *, title: str, chosen: list[Candidate] | None = None) -> None:
    """Write the two-panel PNG atomically (temp file + rename)."""
    plt = _pyplot()
    t = res.table
    cost = objective_column(t, "cost")
    priced = all(o.priced for o in res.options)
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(14, 6), gridspec_kw={"width_ratios": [3, 2]})
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for k, opt in enumerate(res.options):
        idx = np.nonzero(res.feasible & (t["option"] == k))[0]
        if len(idx) > MAX_POINTS_PER_OPTION:
            idx = idx[np.linspace(0, len(idx) - 1, MAX_POINTS_PER_OPTION).astype(int)]
        col = colors[k % len(colors)]
        ax.scatter(t["wall_s"][idx] / DAY_S, cost[idx], s=4, alpha=0.25, color=col)
        front = res.frontier_by_option.get(opt.label, [])
        if front:
            ax.plot(
                [c.wall_s / DAY_S for c in front],
                [c.objective("cost") for c in front],
                "-o",
                ms=3,
                color=col,
                label=f"{opt.label} Pareto frontier",
            )
    ch = res.chosen
    ax.scatter(
        [ch.wall_s / DAY_S],
        [ch.objective("cost")],
        marker="*",
        s=250,
        color="black",
        zorder=5,
        label=f"chosen: {ch.option.label}, {ch.gpus} GPUs",
    )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("wall time (days)")
    ax.set_ylabel("cost (USD)" if priced else "cost (USD; GPU-hours where unpriced)")
    ax.set_title("feasible plans: cost vs time")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)

    plans = chosen or [res.chosen]
    labels = [f"{c.option.name}\n{c.gpus} GPUs, ZeRO-{c.plan.zero_stage}" for c in plans]
    bottoms = np.zeros(len(plans))
    parts = [memory_breakdown_gib(res, c) for c in plans]
    for g in MEMORY_GROUPS:
        vals = np.array([p[g] for p in parts])
        bx.bar(labels, vals, bottom=bottoms, label=g)
        bottoms += vals
    for x, c in enumerate(plans):
        bx.hlines(c.hbm_bytes / GIB, x - 0.4, x + 0.4, colors="red", linestyles="--")
        bx.text(
            x,
            c.hbm_bytes / GIB,
            f"HBM {c.hbm_bytes / GIB:.0f} GiB",
            ha="center",
            va="bottom",
            fontsize=8,
            color="red",
        )
    bx.set_ylabel("GiB per GPU")
    bx.set_title("per-GPU memory of the chosen plan" + ("s" if len(plans) > 1 else ""))
    bx.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2)
    bx.tick_params(axis="x", labelsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    save_png(fig, plt, path)
