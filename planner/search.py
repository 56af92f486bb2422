"""The plan search: enumerate → evaluate (vectorised) → check constraints → rank, Pareto, explain.

`search()` evaluates every candidate of `planner.grid` on every option (hardware, or offering at a
pricing) with planner.vectorized (numpy, the same term functions as `estimate()`), applies the
constraints as boolean masks, and returns the chosen plan, the ranked alternatives, the cost-vs-time
Pareto frontier, which constraints bind the choice and why the plans next to it lost. Memory and
step time are evaluated once per hardware profile and shared by its offerings; of each option only
the candidates the result can show are kept, so a search over the whole catalog stays small.

Order is deterministic: candidates are ranked by the objective, then the other two objectives, then
fewer GPUs, then option order and grid order.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from planner.errors import InfeasibleError
from planner.grid import OFFLOAD_DEVICES, Grid, SearchSpace, build_grid, plan_of_row
from planner.spec import SEARCHED_PLAN_FIELDS, HardwareSpec, ModelSpec, ParallelPlan, TrainingSpec
from planner.units import GIB
from planner.vectorized import Option, hardware_figures, option_figures

Objective = Literal["cost", "time", "energy"]
OBJECTIVES: tuple[str, ...] = ("cost", "time", "energy")
DAY_S = 86400.0


@dataclass(frozen=True)
class Constraints:
    """What a plan must satisfy. Fractions of headroom keep that share of HBM / host RAM free."""

    batch_tolerance: float = 0.0
    deadline_s: float | None = None
    budget_usd: float | None = None
    max_gpus: int | None = None
    hbm_headroom: float = 0.0
    hbm_headroom_gib: float = 0.0  # GiB kept free per GPU on top of the fraction (--hbm-headroom 8GiB)
    host_headroom: float = 0.0
    min_dp_group: int | None = None  # None: from the hardware profile (collective.small_group_gbps)


def min_dp_group(option: Option, constraints: Constraints) -> int:
    """The smallest data-parallel group worth running: where the profile measures a much lower bus
    bandwidth for groups smaller than a node (collective.small_group_gbps, e.g. MI300X: 48 GB/s on
    2 GPUs vs 305 GB/s on 8), a whole node; else 1."""
    if constraints.min_dp_group is not None:
        return constraints.min_dp_group
    hw = option.hardware
    return hw.gpus_per_node if hw.collective.small_group_gbps is not None else 1


# A layout apart from its batch split: what the ranked list shows once, and what "close
# alternatives" are compared against.
LAYOUT_COLUMNS = (
    "option",
    "nodes",
    "zero_stage",
    "offload_optimizer",
    "offload_param",
    "hpz_partition_size",
    "grad_ckpt",
)
# Columns of the combined candidate table (all options): settings, then figures.
SETTING_COLUMNS = ("option", *SEARCHED_PLAN_FIELDS, "global_batch")
FIGURE_COLUMNS = (
    "gpu_total_bytes",
    "hbm_limit_bytes",
    "host_per_node_bytes",
    "host_limit_bytes",
    "nvme_per_node_bytes",
    "nvme_limit_bytes",
    "step_s",
    "wall_s",
    "gpu_hours",
    "total_usd",
    "energy_kwh",
    "co2_kg",
    "min_group",
)
CONSTRAINT_NAMES = ("hbm", "host_ram", "nvme", "min_dp_group", "max_gpus", "deadline", "budget")


@dataclass
class Table:
    """Every candidate of every option: one numpy column per name."""

    cols: dict[str, np.ndarray]
    # Columns derived from cols (the cost objective), computed once: ranking asks for them hundreds
    # of times.
    derived: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    def __len__(self) -> int:
        return int(self.cols["nodes"].shape[0])

    def __getitem__(self, key: str) -> np.ndarray:
        return self.cols[key]


@dataclass(frozen=True)
class Candidate:
    """One evaluated plan, as plain Python values."""

    index: int
    option: Option
    plan: ParallelPlan
    wall_s: float
    gpu_hours: float
    total_usd: float | None
    energy_kwh: float
    co2_kg: float | None
    gpu_total_bytes: float
    hbm_bytes: float
    host_per_node_bytes: float
    host_ram_bytes: float
    step_s: float
    violations: list[str] = field(default_factory=list)

    @property
    def gpus(self) -> int:
        return self.plan.world_size

    def settings(self) -> str:
        p = self.plan
        off = (
            f"offload opt {p.offload_optimizer}/param {p.offload_param}"
            if (p.offload_optimizer, p.offload_param) != ("none", "none")
            else "no offload"
        )
        hpz = f", hpZ {p.hpz_partition_size}" if p.hpz_partition_size > 1 else ""
        return (
            f"ZeRO-{p.zero_stage}, {off}{hpz}, ckpt {'on' if p.grad_ckpt else 'off'}, "
            f"micro-batch {p.micro_batch} × gas {p.grad_accum}"
        )

    def objective(self, objective: str) -> float:
        if objective == "time":
            return self.wall_s
        if objective == "energy":
            return self.energy_kwh
        return self.total_usd if self.total_usd is not None else self.gpu_hours


@dataclass(frozen=True)
class Alternative:
    """A plan next to the chosen one (one setting changed) and why it lost."""

    change: str
    candidate: Candidate
    reason: str


@dataclass(frozen=True)
class Binding:
    """A constraint that changes the choice: the best plan without it, and what it breaks."""

    constraint: str
    candidate: Candidate
    reason: str


@dataclass
class SearchResult:
    model: ModelSpec
    training: TrainingSpec
    objective: str
    options: list[Option]
    constraints: Constraints
    table: Table
    feasible: np.ndarray
    chosen: Candidate
    ranked: list[Candidate]
    frontier: list[Candidate]
    binding: list[Binding]
    alternatives: list[Alternative]
    candidates_evaluated: int
    feasible_count: int  # of all candidates evaluated (`table` may keep only those it can show)
    # Options asked for and not searched, each with why (the hardware cannot run the requested
    # attention kernel: launcher.commands.plan.runnable_options).
    excluded: tuple[tuple[Option, str], ...] = ()

    @property
    def frontier_by_option(self) -> dict[str, list[Candidate]]:
        """Each option's own Pareto frontier (the plot draws them), computed when asked."""
        t, idx = self.table, np.nonzero(self.feasible)[0]
        out: dict[str, list[Candidate]] = {}
        for k, opt in enumerate(self.options):
            sub = idx[t["option"][idx] == k]
            out[opt.label] = [candidate(t, int(i), self.options) for i in pareto_frontier(t, sub)]
        return out


# ------------------------------------------------------------------------------------------ evaluation
# The figures of the table that depend on the hardware alone (hardware_figures), kept per hardware.
HARDWARE_COLUMNS = ("gpu_total_bytes", "host_per_node_bytes", "nvme_per_node_bytes", "step_s")
OPTION_COLUMNS = ("wall_s", "gpu_hours", "total_usd", "energy_kwh", "co2_kg")


class Evaluator:
    """Each option's candidates, with the physics evaluated once per hardware profile: five H100 price
    lists share one grid and one memory/step-time evaluation; each adds only its wall time, money and
    energy (planner.vectorized.option_figures)."""

    def __init__(
        self, model: ModelSpec, training: TrainingSpec, space: SearchSpace, constraints: Constraints
    ) -> None:
        self.model, self.training, self.space, self.constraints = model, training, space, constraints
        # Per hardware: its grid, its memory/step-time columns and the wall times its offerings share.
        self._by_hardware: list[tuple[HardwareSpec, Grid, dict[str, np.ndarray], dict[Any, Any]]] = []
        self._grids: dict[int, Grid] = {}  # by GPUs per node: the candidates do not depend on more

    def hardware(self, hw: HardwareSpec) -> tuple[Grid, dict[str, np.ndarray]]:
        """The grid of this hardware and its memory/step-time columns (computed on first use)."""
        grid, figures, _ = self._hardware(hw)
        return grid, figures

    def _hardware(self, hw: HardwareSpec) -> tuple[Grid, dict[str, np.ndarray], dict[Any, Any]]:
        for known, grid, figures, walls in self._by_hardware:
            if known is hw or known == hw:
                return grid, figures, walls
        if hw.gpus_per_node not in self._grids:
            self._grids[hw.gpus_per_node] = build_grid(
                self.space, hw.gpus_per_node, self.training.global_batch, self.constraints.batch_tolerance
            )
        grid = self._grids[hw.gpus_per_node]
        figures = hardware_figures(self.model, hw, self.training, grid, keys=HARDWARE_COLUMNS)
        self._by_hardware.append((hw, grid, figures, {}))
        return self._by_hardware[-1][1:]

    def columns(self, opt: Option, option_index: int) -> dict[str, np.ndarray]:
        """Every candidate of one option as table columns (settings, figures, limits)."""
        grid, hw_figures, walls = self._hardware(opt.hardware)
        r = option_figures(self.model, opt, self.training, grid, hw_figures, walls)
        return option_columns(grid, option_index, opt, r, self.constraints)


def option_columns(
    grid: Grid, option_index: int, opt: Option, figures: dict[str, np.ndarray], constraints: Constraints
) -> dict[str, np.ndarray]:
    """One option's table columns from its grid and its evaluated figures (planner.vectorized)."""
    n = len(grid)
    hw = opt.hardware
    cols = _grid_columns(grid, option_index)
    cols.update({k: figures[k] for k in (*HARDWARE_COLUMNS, *OPTION_COLUMNS)})
    cols["hbm_limit_bytes"] = same_for_all(
        n, hw.hbm_bytes * (1.0 - constraints.hbm_headroom) - constraints.hbm_headroom_gib * GIB
    )
    cols["host_limit_bytes"] = same_for_all(n, opt.host_ram_bytes * (1.0 - constraints.host_headroom))
    cols["nvme_limit_bytes"] = same_for_all(n, opt.nvme_bytes)
    cols["min_group"] = same_for_all(n, min_dp_group(opt, constraints), np.int64)
    if not opt.priced:
        cols["total_usd"] = same_for_all(n, np.nan)
    return cols


def same_for_all(n: int, value: float, dtype: type = np.float64) -> np.ndarray:
    """A read-only column of n equal values that allocates one (np.broadcast_to): an option's limits
    are the same for each of its ~10^5 candidates, and only the rows it keeps are copied (`search`)."""
    return np.broadcast_to(np.asarray(value, dtype=dtype), (n,))


def evaluate_options(
    model: ModelSpec,
    options: list[Option],
    training: TrainingSpec,
    space: SearchSpace,
    constraints: Constraints,
) -> Table:
    """Every candidate of every option in one table (the physics once per hardware)."""
    ev = Evaluator(model, training, space, constraints)
    parts = [ev.columns(opt, i) for i, opt in enumerate(options)]
    return Table({k: np.concatenate([p[k] for p in parts]) for k in parts[0]})


def _grid_columns(grid: Grid, option_index: int) -> dict[str, np.ndarray]:
    n = len(grid)
    return {
        "option": same_for_all(n, option_index, np.int64),
        "nodes": grid.nodes,
        "gpus_per_node": same_for_all(n, grid.gpus_per_node, np.int64),
        "zero_stage": grid.zero_stage,
        "offload_optimizer": grid.offload_optimizer,
        "offload_param": grid.offload_param,
        "hpz_partition_size": grid.hpz_partition_size,
        "grad_ckpt": grid.grad_ckpt,
        "micro_batch": grid.micro_batch,
        "grad_accum": grid.grad_accum,
        "global_batch": grid.global_batch,
    }


def constraint_masks(t: Table, constraints: Constraints) -> dict[str, np.ndarray]:
    """One boolean column per constraint: True where the candidate satisfies it."""
    world = t["nodes"] * t["gpus_per_node"]
    hpz = t["hpz_partition_size"]
    true = np.ones(len(t), dtype=bool)
    return {
        "hbm": t["gpu_total_bytes"] <= t["hbm_limit_bytes"],
        "host_ram": t["host_per_node_bytes"] <= t["host_limit_bytes"],
        "nvme": t["nvme_per_node_bytes"] <= t["nvme_limit_bytes"],
        "min_dp_group": (world >= t["min_group"]) & ((hpz == 1) | (hpz >= t["min_group"])),
        "max_gpus": world <= constraints.max_gpus if constraints.max_gpus is not None else true,
        "deadline": t["wall_s"] <= constraints.deadline_s if constraints.deadline_s is not None else true,
        # NaN (unpriced) compares False: a budget needs prices (the CLI insists on an offering).
        "budget": t["total_usd"] <= constraints.budget_usd if constraints.budget_usd is not None else true,
    }


def objective_column(t: Table, objective: str) -> np.ndarray:
    if objective == "time":
        return t["wall_s"]
    if objective == "energy":
        return t["energy_kwh"]
    if "cost" not in t.derived:
        usd = t["total_usd"]
        t.derived["cost"] = np.where(np.isnan(usd), t["gpu_hours"], usd)
    return t.derived["cost"]


def rank_order(t: Table, objective: str, idx: np.ndarray) -> np.ndarray:
    """idx sorted: objective, the other objectives, fewer GPUs, option, grid order (stable)."""
    others = [o for o in OBJECTIVES if o != objective]
    keys = [
        idx,
        t["option"][idx],
        t["nodes"][idx] * t["gpus_per_node"][idx],  # the GPUs, of idx only: called hundreds of times
        objective_column(t, others[1])[idx],
        objective_column(t, others[0])[idx],
        objective_column(t, objective)[idx],
    ]
    return idx[np.lexsort(keys)]


def top_order(t: Table, objective: str, idx: np.ndarray, k: int) -> np.ndarray:
    """The first k (at least) of rank_order(idx) without sorting everything: every candidate whose
    objective is no worse than the k-th smallest (ties included), ranked."""
    if len(idx) <= k:
        return rank_order(t, objective, idx)
    obj = objective_column(t, objective)[idx]
    kth = obj.min() if k == 1 else np.partition(obj, k - 1)[k - 1]  # the same value; min is faster
    return rank_order(t, objective, idx[obj <= kth])


# Above this many candidates, pareto_frontier first drops those a sample's frontier already beats.
PARETO_SAMPLE_ABOVE = 4096


def pareto_frontier(t: Table, idx: np.ndarray) -> np.ndarray:
    """Candidates of idx that no other candidate beats on both wall time and cost (GPU-hours when
    unpriced), sorted by wall time."""
    if len(idx) > PARETO_SAMPLE_ABOVE:
        idx = _not_beaten(t, idx)
    if not len(idx):
        return idx
    cost = objective_column(t, "cost")[idx]
    wall = t["wall_s"][idx]
    order = np.lexsort((cost, wall))  # stable: ties keep idx (ascending) order
    c = cost[order]
    prev_min = np.concatenate([[np.inf], np.minimum.accumulate(c)[:-1]])
    return idx[order[c < prev_min]]


def _not_beaten(t: Table, idx: np.ndarray) -> np.ndarray:
    """idx less the candidates that a point of an evenly spaced sample's frontier beats: strictly
    faster and no dearer, so it comes first in the frontier's order and hides them. The sample's
    frontier stays, so what hid a dropped candidate is still there: the frontier is unchanged, only
    cheaper to sort."""
    sample = idx[:: max(1, len(idx) // 1024)]
    front = pareto_frontier(t, sample)  # walls ascending, costs strictly descending
    f_wall = t["wall_s"][front]
    f_cost = objective_column(t, "cost")[front]
    wall = t["wall_s"][idx]
    m = np.searchsorted(f_wall, wall, side="left")  # frontier points strictly faster than each
    beaten = (m > 0) & (f_cost[np.maximum(m - 1, 0)] <= objective_column(t, "cost")[idx])
    return idx[~beaten]


# ------------------------------------------------------------------------------------------ candidates
def candidate(
    t: Table,
    i: int,
    options: list[Option],
    masks: dict[str, np.ndarray] | None = None,
    constraints: Constraints | None = None,
) -> Candidate:
    opt = options[int(t["option"][i])]
    plan = plan_of_row(t, i)
    usd = float(t["total_usd"][i])
    co2 = float(t["co2_kg"][i])
    c = Candidate(
        index=int(i),
        option=opt,
        plan=plan,
        wall_s=float(t["wall_s"][i]),
        gpu_hours=float(t["gpu_hours"][i]),
        total_usd=None if np.isnan(usd) else usd,
        energy_kwh=float(t["energy_kwh"][i]),
        co2_kg=None if np.isnan(co2) else co2,
        gpu_total_bytes=float(t["gpu_total_bytes"][i]),
        hbm_bytes=opt.hardware.hbm_bytes,
        host_per_node_bytes=float(t["host_per_node_bytes"][i]),
        host_ram_bytes=opt.host_ram_bytes,
        step_s=float(t["step_s"][i]),
    )
    if masks is not None and constraints is not None:
        c.violations.extend(violations(t, i, options, masks, constraints))
    return c


def fmt_duration(s: float) -> str:
    if s >= DAY_S:
        return f"{s / DAY_S:,.1f} d"
    if s >= 3600:
        return f"{s / 3600:,.1f} h"
    if s >= 60:
        return f"{s / 60:,.0f} min"
    return f"{s:,.0f} s"  # a deadline under a minute would otherwise read "0 min"


def fmt_usd(x: float) -> str:
    if abs(x) >= 1e6:
        return f"${x / 1e6:,.2f}M"
    if abs(x) >= 1e5:
        return f"${x / 1e3:,.0f}k"
    if abs(x) >= 1e3:
        return f"${x / 1e3:,.1f}k"
    return f"${x:,.0f}"


def violations(
    t: Table, i: int, options: list[Option], masks: dict[str, np.ndarray], constraints: Constraints
) -> list[str]:
    """Each violated constraint as a phrase with its numbers, in CONSTRAINT_NAMES order."""
    out = []
    opt = options[int(t["option"][i])]
    stage = int(t["zero_stage"][i])
    world = int(t["nodes"][i] * t["gpus_per_node"][i])
    for name in CONSTRAINT_NAMES:
        if masks[name][i]:
            continue
        if name == "hbm":
            kept = [f"{constraints.hbm_headroom:.0%}"] if constraints.hbm_headroom else []
            kept += [f"{constraints.hbm_headroom_gib:g} GiB"] if constraints.hbm_headroom_gib else []
            head = f" ({' + '.join(kept)} kept free)" if kept else ""
            out.append(
                f"ZeRO-{stage} needs {t['gpu_total_bytes'][i] / GIB:,.1f} GiB/GPU > "
                f"{t['hbm_limit_bytes'][i] / GIB:,.1f} GiB HBM{head}"
            )
        elif name == "host_ram":
            out.append(_needs_per_node(t, i, "host", "host RAM", GIB, "GiB", ",.0f"))
        elif name == "nvme":
            out.append(_needs_per_node(t, i, "nvme", "NVMe", 1e12, "TB", ",.1f"))
        elif name == "min_dp_group":
            g = int(t["min_group"][i])
            sg = opt.hardware.collective.small_group_gbps
            why = (
                f"; {opt.hardware.name} groups under a node run at {sg.value:g} GB/s"
                if sg is not None
                else ""
            )
            hpz = int(t["hpz_partition_size"][i])
            group = hpz if hpz > 1 and hpz < g else world
            out.append(f"a {group}-GPU group is below the minimum data-parallel group of {g}{why}")
        elif name == "max_gpus":
            out.append(f"{world} GPUs > --max-gpus {constraints.max_gpus}")
        elif name == "deadline":
            out.append(
                f"takes {fmt_duration(float(t['wall_s'][i]))} > deadline "
                f"{fmt_duration(constraints.deadline_s or 0.0)}"
            )
        elif name == "budget":
            usd = float(t["total_usd"][i])
            out.append(
                "no price (unpriced option)"
                if np.isnan(usd)
                else f"costs {fmt_usd(usd)} > budget {fmt_usd(constraints.budget_usd or 0.0)}"
            )
    return out


def _needs_per_node(t: Table, i: int, key: str, what: str, scale: float, unit: str, spec: str) -> str:
    """`needs N <unit> <what> per node > LIMIT <unit>`, from the table's `<key>_per_node_bytes` and
    `<key>_limit_bytes` columns."""
    need, limit = t[f"{key}_per_node_bytes"][i] / scale, t[f"{key}_limit_bytes"][i] / scale
    return f"needs {need:{spec}} {unit} {what} per node > {limit:{spec}} {unit}"


def _pct(a: float, b: float) -> str:
    """a relative to b, as '+12.3%'; from ten times b on as a multiple ('×46,907'), which a percentage
    with seven digits hides."""
    if not b:
        return "n/a"
    if a / b >= 10:
        return f"×{a / b:,.0f}"
    d = (a / b - 1) * 100
    return f"{d:+.2f}%" if abs(d) < 1 else f"{d:+.1f}%"


def _over(cost: float, budget: float) -> str:
    """How far a cost exceeds a budget: '$12.3k, +4.1% over', or from ten times on '×46,907 the budget'."""
    if cost / budget >= 10:
        return f"{_pct(cost, budget)} the budget"
    return f"{fmt_usd(cost - budget)}, {_pct(cost, budget)} over"


def compare_line(c: Candidate, chosen: Candidate, objective: str) -> str:
    names = {
        "cost": "cost" if chosen.total_usd is not None else "GPU-hours",
        "time": "wall time",
        "energy": "energy",
    }
    v, w = c.objective(objective), chosen.objective(objective)
    show = {
        "cost": (lambda x: fmt_usd(x)) if chosen.total_usd is not None else (lambda x: f"{x:,.0f} GPU-h"),
        "time": fmt_duration,
        "energy": lambda x: f"{x / 1000:,.1f} MWh",
    }[objective]
    return f"{names[objective]} {show(v)} vs {show(w)} ({_pct(v, w)})"


# ------------------------------------------------------------------------------------------ search
def search(
    model: ModelSpec,
    options: list[Option],
    training: TrainingSpec,
    *,
    objective: str = "cost",
    space: SearchSpace | None = None,
    constraints: Constraints | None = None,
    top: int = 10,
    keep_feasible: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> SearchResult:
    """The best plan for the objective under the constraints, over every option.

    The physics is evaluated once per hardware (Evaluator). Once an option's figures are known, only
    the candidates the result can show are kept (`shown_rows`), so the whole catalog fits in memory;
    the chosen option keeps every candidate (the alternatives change one of its settings), and with
    keep_feasible every option keeps its feasible ones (the plot draws them). What the result holds
    is what ranking every candidate of every option gives (`rank_table` on evaluate_options:
    tests/search/test_catalog.py). `progress(done, total)` is called after each option."""
    _check_request(objective, options, constraints)
    space = space or SearchSpace()
    constraints = constraints or Constraints()
    ev = Evaluator(model, training, space, constraints)
    kept: list[dict[str, np.ndarray]] = []
    # The option with the best feasible plan so far keeps all its candidates (the alternatives change
    # one setting of the chosen plan): its columns, its shown rows, its best row as a one-row table.
    leader: tuple[int, dict[str, np.ndarray], np.ndarray, Table] | None = None
    total = feasible = 0
    for k, opt in enumerate(options):
        cols = ev.columns(opt, k)
        total += len(cols["nodes"])
        shown = shown_rows(Table(cols), constraints, objective, top, keep_feasible)
        feasible += shown.feasible
        if shown.best is not None:
            best = Table({c: v[[shown.best]] for c, v in cols.items()})  # a copy: a view keeps cols
            if leader is None or _beats(best, leader[3], objective):
                if leader is not None:
                    kept[leader[0]] = {c: v[leader[2]] for c, v in leader[1].items()}
                leader = (k, cols, shown.rows, best)
        kept.append(
            cols if leader is not None and leader[0] == k else {c: v[shown.rows] for c, v in cols.items()}
        )
        if progress is not None:
            progress(k + 1, len(options))
    return rank_table(model, options, training, _concat(kept), objective, constraints, top, (total, feasible))


def _beats(a: Table, b: Table, objective: str) -> bool:
    """Whether one-row table a comes before one-row table b in rank order (b is an earlier option)."""
    both = Table({c: np.concatenate([b[c], a[c]]) for c in a.cols})
    return int(top_order(both, objective, np.arange(2), 1)[0]) == 1


def _check_request(objective: str, options: list[Option], constraints: Constraints | None) -> None:
    if objective not in OBJECTIVES:
        raise InfeasibleError(f"unknown objective '{objective}'", hint="use cost, time or energy")
    if not options:
        raise InfeasibleError("nothing to plan on", hint="name --hardware or --offering")
    if constraints is not None and constraints.budget_usd is not None and not all(o.priced for o in options):
        unpriced = ", ".join(o.name for o in options if not o.priced)
        raise InfeasibleError(
            f"--budget needs prices, but {unpriced} has none",
            hint="name priced --offering profiles instead of --hardware",
        )


def _all(masks: dict[str, np.ndarray], n: int) -> np.ndarray:
    out = np.ones(n, dtype=bool)
    for m in masks.values():
        out &= m
    return out


def broken_alone(masks: dict[str, np.ndarray], n: int) -> dict[str, np.ndarray]:
    """For each constraint, the rows that break it and satisfy every other one: from one count of the
    constraints each row breaks, not six ANDs per constraint (called for every option)."""
    broken = np.zeros(n, dtype=np.int8)
    for m in masks.values():
        broken += ~m
    once = broken == 1
    return {name: once & ~m for name, m in masks.items()}


def _concat(parts: list[dict[str, np.ndarray]]) -> Table:
    """The parts one after the other; each part's column is let go once copied (peak memory). One
    part is taken as it is (one offering: no copy of its ~10^5 rows), its columns made writable."""
    if len(parts) == 1:
        return Table({k: v if v.flags.writeable else v.copy() for k, v in parts[0].items()})
    return Table({k: np.concatenate([p.pop(k) for p in parts]) for k in list(parts[0])})


@dataclass(frozen=True)
class Shown:
    """What `shown_rows` keeps of one option's candidates."""

    rows: np.ndarray  # ascending
    best: int | None  # the best feasible row (None: none is feasible)
    feasible: int  # how many are feasible


def shown_rows(t: Table, constraints: Constraints, objective: str, top: int, keep_feasible: bool) -> Shown:
    """The rows of one option's table that rank_table can show when it ranks all options together.

    Feasible: the best row of each of the option's first `top` layouts in rank order (the ranked
    list, the choice), its Pareto frontier (the overall frontier is made of the options'), and its
    best and its first plan on each node count (`compare` on a common GPU count); every feasible row with
    keep_feasible. Infeasible: the best under the objective of the rows that break exactly one
    constraint (`_binding`), the plans `_why_nothing` names, and the most memory-frugal
    (`_alternatives` for an option with no feasible plan). Each is first in rank order (or in
    memory) of its set within the option, hence also first within all options once they are put
    together: what the exhaustive ranking shows, it finds among these."""
    masks = constraint_masks(t, constraints)
    feasible = _all(masks, len(t))
    keep = feasible.copy() if keep_feasible else np.zeros(len(t), dtype=bool)
    idx = np.nonzero(feasible)[0]
    best = None
    if len(idx):
        ranked_idx = top_order(t, objective, idx, max(50 * top, 1000))
        best = int(ranked_idx[0])
        distinct = _distinct(t, ranked_idx, top)
        if len(distinct) < top and len(ranked_idx) < len(idx):
            distinct = _distinct(t, rank_order(t, objective, idx), top)
        keep[distinct] = True
        keep[pareto_frontier(t, idx)] = True
        keep[_best_per_node_count(t, objective, idx)] = True
        # ... and its first row on each node count (`compare` names the nearest count by it).
        keep[idx[np.unique(t["nodes"][idx], return_index=True)[1]]] = True
    alone = broken_alone(masks, len(t))
    picks: list[int | None] = [_best(t, objective, alone[name]) for name in CONSTRAINT_NAMES]
    hard = masks["hbm"] & masks["host_ram"] & masks["nvme"] & masks["min_dp_group"] & masks["max_gpus"]
    picks += [
        _best(t, "time", hard & masks["budget"]),
        _best(t, "time", hard),
        _best(t, "cost", hard & masks["deadline"]),
        _best(t, "cost", hard),
    ]
    frugal = np.where(masks["min_dp_group"] & masks["max_gpus"], t["gpu_total_bytes"], np.inf)
    picks += [int(np.argmin(frugal)), int(np.argmin(t["gpu_total_bytes"]))]
    keep[[i for i in picks if i is not None]] = True
    return Shown(np.nonzero(keep)[0], best, len(idx))


def _best_per_node_count(t: Table, objective: str, idx: np.ndarray) -> np.ndarray:
    """The first row in rank order of idx for each node count present."""
    obj = objective_column(t, objective)[idx]
    nodes = t["nodes"][idx]
    low = np.full(int(nodes.max()) + 1, np.inf)
    np.minimum.at(low, nodes, obj)
    order = rank_order(t, objective, idx[obj == low[nodes]])  # the ties of each node count's minimum
    first = np.unique(t["nodes"][order], return_index=True)[1]
    return order[first]


def rank_table(
    model: ModelSpec,
    options: list[Option],
    training: TrainingSpec,
    t: Table,
    objective: str,
    constraints: Constraints,
    top: int = 10,
    counts: tuple[int, int] | None = None,
) -> SearchResult:
    """Choose, rank, explain: the search's result from a table of candidates (every candidate, or
    the rows `search` keeps; then `counts` are how many it evaluated and how many were feasible)."""
    masks = constraint_masks(t, constraints)
    ranking = _Ranking(t, masks, options, constraints, objective)
    feasible = _all(masks, len(t))
    idx = np.nonzero(feasible)[0]
    if not len(idx):
        message, hint = _why_nothing(ranking)
        raise InfeasibleError(message, hint=hint)
    ranked_idx = top_order(t, objective, idx, max(50 * top, 1000))
    distinct = _distinct(t, ranked_idx, top)
    if len(distinct) < top and len(ranked_idx) < len(idx):
        distinct = _distinct(t, rank_order(t, objective, idx), top)
    chosen = candidate(t, int(ranked_idx[0]), options)
    ranked = [candidate(t, int(i), options) for i in distinct]
    front = [candidate(t, int(i), options) for i in pareto_frontier(t, idx)]
    binding = _binding(ranking, chosen)
    alts = _alternatives(ranking, chosen, feasible)
    return SearchResult(
        model=model,
        training=training,
        objective=objective,
        options=options,
        constraints=constraints,
        table=t,
        feasible=feasible,
        chosen=chosen,
        ranked=ranked,
        frontier=front,
        binding=binding,
        alternatives=alts,
        candidates_evaluated=counts[0] if counts else len(t),
        feasible_count=counts[1] if counts else len(idx),
    )


def thin_frontier(front: list[Candidate], min_step: float = 0.01) -> list[Candidate]:
    """The frontier for display: walking from fastest to cheapest, keep a point when its cost is at
    least `min_step` below the last kept one (the cheapest is always kept)."""
    out: list[Candidate] = []
    for c in front:
        if not out or c.objective("cost") <= out[-1].objective("cost") * (1 - min_step):
            out.append(c)
    if front and out[-1] is not front[-1]:
        out.append(front[-1])
    return out


def _distinct(t: Table, ranked_idx: np.ndarray, top: int) -> list[int]:
    """The first `top` ranked candidates, one per (option, nodes, ZeRO/offload/hpZ/ckpt) setting: the
    best micro-batch of each, so the table shows different plans rather than batch-shape variants."""
    seen: set[tuple[int, ...]] = set()
    out: list[int] = []
    for i in ranked_idx:
        key = tuple(int(t[c][i]) for c in LAYOUT_COLUMNS)
        if key in seen:
            continue
        seen.add(key)
        out.append(int(i))
        if len(out) >= top:
            break
    return out


def _best(t: Table, objective: str, mask: np.ndarray) -> int | None:
    idx = np.nonzero(mask)[0]
    return int(top_order(t, objective, idx, 1)[0]) if len(idx) else None


@dataclass(frozen=True)
class _Ranking:
    """A table being ranked, with what every explanation of its plans needs."""

    t: Table
    masks: dict[str, np.ndarray]
    options: list[Option]
    constraints: Constraints
    objective: str

    def candidate(self, i: int) -> Candidate:
        """Row `i` as a candidate, with the constraints it violates."""
        return candidate(self.t, i, self.options, self.masks, self.constraints)


def _why_nothing(r: _Ranking) -> tuple[str, str]:
    """Nothing is feasible: name the constraint(s) that cannot be met, the cheapest / fastest plan that
    exists without them, and by how much it misses."""
    t, masks, options, constraints = r.t, r.masks, r.options, r.constraints
    hard = np.ones(len(t), dtype=bool)
    for name in ("hbm", "host_ram", "nvme", "min_dp_group", "max_gpus"):
        hard &= masks[name]
    if not hard.any():
        i = int(np.argmin(np.where(masks["min_dp_group"] & masks["max_gpus"], t["gpu_total_bytes"], np.inf)))
        c = r.candidate(i)
        return (
            f"no plan fits: the most memory-frugal ({c.option.label}, {c.gpus} GPUs, {c.settings()}) "
            f"{'; '.join(c.violations) or 'violates the limits'}",
            "allow more nodes (--max-nodes/--max-gpus), offload, or a GPU with more memory",
        )
    parts = []
    if constraints.deadline_s is not None:
        best_t = _best(t, "time", hard & masks["budget"]) if constraints.budget_usd is not None else None
        i = best_t if best_t is not None else _best(t, "time", hard)
        c = candidate(t, int(i), options)  # type: ignore[arg-type]
        if c.wall_s > constraints.deadline_s:
            within = " within the budget" if best_t is not None else ""
            parts.append(
                f"deadline {fmt_duration(constraints.deadline_s)} is impossible: the fastest plan{within} "
                f"takes {fmt_duration(c.wall_s)} ({fmt_duration(c.wall_s - constraints.deadline_s)} over; "
                f"{c.option.label}, {c.gpus} GPUs, {c.settings()})"
            )
    if constraints.budget_usd is not None:
        best_c = _best(t, "cost", hard & masks["deadline"]) if constraints.deadline_s is not None else None
        i = best_c if best_c is not None else _best(t, "cost", hard)
        c = candidate(t, int(i), options)  # type: ignore[arg-type]
        if c.total_usd is not None and c.total_usd > constraints.budget_usd:
            within = " within the deadline" if best_c is not None else ""
            parts.append(
                f"budget {fmt_usd(constraints.budget_usd)} is too small: the cheapest plan{within} costs "
                f"{fmt_usd(c.total_usd)} ({_over(c.total_usd, constraints.budget_usd)}; {c.option.label}, "
                f"{c.gpus} GPUs, {fmt_duration(c.wall_s)})"
            )
    if not parts:
        parts.append("no plan meets the deadline and the budget together")
    return "; ".join(parts), "relax --deadline or --budget, or add options (--offering, --max-gpus)"


def _binding(r: _Ranking, chosen: Candidate) -> list[Binding]:
    """A constraint binds when dropping it alone would give a better plan for the objective."""
    t, objective = r.t, r.objective
    out = []
    obj = objective_column(t, objective)
    alone = broken_alone(r.masks, len(t))
    for name in CONSTRAINT_NAMES:
        i = _best(t, objective, alone[name])
        if i is None or not obj[i] < chosen.objective(objective):
            continue
        c = r.candidate(i)
        out.append(
            Binding(
                name,
                c,
                f"without it: {c.option.label}, {c.gpus} GPUs, {c.settings()} — "
                f"{compare_line(c, chosen, objective)}; but {'; '.join(c.violations)}",
            )
        )
    return out


def _alternatives(r: _Ranking, chosen: Candidate, feasible: np.ndarray) -> list[Alternative]:
    """The chosen plan with one setting changed (the best micro-batch for it), and why each lost."""
    t, options, objective = r.t, r.options, r.objective
    i0 = chosen.index
    sub = np.nonzero(t["option"] == t["option"][i0])[0]
    if len(options) > 1:
        sub = np.arange(len(t))
    base = {c: t[c][i0] for c in (*LAYOUT_COLUMNS, "micro_batch")}

    def same(cols: tuple[str, ...], idx: np.ndarray) -> np.ndarray:
        m = np.ones(len(idx), dtype=bool)
        for c in cols:
            m &= t[c][idx] == base[c]
        return m

    out: list[Alternative] = []
    settings = ("zero_stage", "offload_optimizer", "offload_param", "hpz_partition_size", "grad_ckpt")
    opt_sub = sub[t["option"][sub] == base["option"]]

    def add(change: str, pool: np.ndarray) -> None:
        if not len(pool):
            return
        fe = pool[feasible[pool]]
        pick = fe if len(fe) else pool
        j = (
            int(top_order(t, objective, pick, 1)[0])
            if len(fe)
            else int(pick[np.lexsort((pick, t["gpu_total_bytes"][pick]))][0])
        )
        c = r.candidate(j)
        reason = "; ".join(c.violations) if c.violations else compare_line(c, chosen, objective)
        out.append(Alternative(change, c, reason))

    # Same nodes, micro-batch and settings except one.
    for col in settings:
        # A ZeRO stage change drops what the other stage cannot have (offload, hpZ): its best such plan.
        kept = ("grad_ckpt",) if col == "zero_stage" else tuple(s for s in settings if s != col)
        keep = (*kept, "nodes", "micro_batch")
        pool = opt_sub[same(keep, opt_sub)]
        for v in _unique(t[col][pool]):
            if v == base[col]:
                continue
            add(_change_label(col, int(v)), pool[t[col][pool] == v])
    # Neighbouring node counts with the same settings (their best micro-batch).
    keep_all = same(settings, opt_sub)
    pool = opt_sub[keep_all]
    node_values = _unique(t["nodes"][pool])
    k = int(np.searchsorted(node_values, base["nodes"]))
    for nv in {int(node_values[j]) for j in (k - 1, k + 1) if 0 <= j < len(node_values)} - {
        int(base["nodes"])
    }:
        add(f"{nv} nodes", pool[t["nodes"][pool] == nv])
    # Neighbouring micro-batches at the same node count and settings.
    pool_n = pool[t["nodes"][pool] == base["nodes"]]
    mbs = _unique(t["micro_batch"][pool_n])
    k = int(np.searchsorted(mbs, base["micro_batch"]))
    for j in (k - 1, k + 1):
        if 0 <= j < len(mbs) and mbs[j] != base["micro_batch"]:
            add(f"micro-batch {int(mbs[j])}", pool_n[t["micro_batch"][pool_n] == mbs[j]])
    # Other options: their best plan.
    for k_opt, opt in enumerate(options):
        if k_opt != base["option"]:
            add(f"on {opt.label}", sub[t["option"][sub] == k_opt])
    return out


def _unique(a: np.ndarray) -> np.ndarray:
    """np.unique(a), sorted; asked for the indices too so that numpy takes its sorting path, which
    does not import numpy.ma (its hashing path does: start-up time)."""
    return np.unique(a, return_index=True)[0]


def _change_label(col: str, v: int) -> str:
    if col == "zero_stage":
        return f"ZeRO-{v}"
    if col == "offload_optimizer":
        return f"offload optimizer {OFFLOAD_DEVICES[v]}"
    if col == "offload_param":
        return f"offload param {OFFLOAD_DEVICES[v]}"
    if col == "hpz_partition_size":
        return "no hpZ" if v == 1 else f"hpZ {v}"
    return f"ckpt {'on' if v else 'off'}"


def as_dict(c: Candidate) -> dict[str, Any]:
    """A candidate as a flat JSON/CSV row."""
    p = c.plan
    return {
        "option": c.option.name,
        "pricing": c.option.pricing or "",
        "hardware": c.option.hardware.name,
        "nodes": p.nodes,
        "gpus": p.world_size,
        "zero_stage": p.zero_stage,
        "offload_optimizer": p.offload_optimizer,
        "offload_param": p.offload_param,
        "hpz_partition_size": p.hpz_partition_size,
        "grad_ckpt": p.grad_ckpt,
        "micro_batch": p.micro_batch,
        "grad_accum": p.grad_accum,
        "global_batch": p.global_batch,
        "wall_days": round(c.wall_s / DAY_S, 4),
        "gpu_hours": round(c.gpu_hours, 1),
        "cost_usd": None if c.total_usd is None else round(c.total_usd, 2),
        "energy_mwh": round(c.energy_kwh / 1000, 3),
        "co2_t": None if c.co2_kg is None else round(c.co2_kg / 1000, 3),
        "gib_per_gpu": round(c.gpu_total_bytes / GIB, 2),
        "hbm_headroom_gib": round((c.hbm_bytes - c.gpu_total_bytes) / GIB, 2),
    }
