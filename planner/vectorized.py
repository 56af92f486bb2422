"""Every figure of every candidate plan at once: planner.evaluate's array-friendly functions (the very
ones `planner.estimate.estimate` calls for one plan) applied to the columns of a `planner.grid.Grid`.

Candidates are evaluated one ZeRO stage at a time (the set of collectives differs by stage, and
`planner.comm.zero_collectives` takes the stage as a Python int); every other setting is an array.
The result agrees to the byte with `estimate()` on each candidate (tests/search/test_agreement.py).
The memory and step-time figures depend on the hardware, not on the price list: `hardware_figures` once
per hardware profile, `option_figures` per offering on top (planner.search shares the first).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from planner import cost
from planner import evaluate as ev
from planner.errors import InfeasibleError
from planner.grid import Grid
from planner.layout import Layout, run_settings
from planner.spec import PRICINGS, HardwareSpec, ModelSpec, OfferingSpec, TrainingSpec
from planner.units import GIB

Pricing = Literal["on_demand", "spot", "committed", "on_prem"]


@dataclass(frozen=True)
class Option:
    """One thing to plan on: a hardware profile, optionally priced by an offering at one pricing."""

    hardware: HardwareSpec
    offering: OfferingSpec | None = None
    pricing: Pricing | None = None

    @property
    def name(self) -> str:
        return self.offering.name if self.offering is not None else self.hardware.name

    @property
    def label(self) -> str:
        return f"{self.name} ({self.pricing.replace('_', '-')})" if self.pricing else self.name

    @property
    def priced(self) -> bool:
        return self.offering is not None

    def usd_per_node_hour(self) -> float:
        o = self.offering
        if o is None:
            return 0.0
        if self.pricing == "on_prem":
            assert o.on_prem is not None  # guaranteed by make_option
            return o.on_prem.usd_per_node_hour(self.hardware.node_power_kw.value, o.pue.value)
        price = {
            "on_demand": o.on_demand_usd_per_node_hour,
            "spot": o.spot_usd_per_node_hour,
            "committed": o.committed_usd_per_node_hour,
        }[self.pricing or "on_demand"]
        assert price is not None
        return price.value

    def spot_rate(self) -> float:
        o = self.offering
        if self.pricing == "spot" and o is not None and o.spot_interruptions_per_node_month is not None:
            return o.spot_interruptions_per_node_month.value
        return 0.0

    @property
    def host_ram_bytes(self) -> float:
        o = self.offering
        return (
            o.host_ram_gib if o is not None and o.host_ram_gib else self.hardware.host_ram_gib
        ).value * GIB

    @property
    def nvme_bytes(self) -> float:
        o = self.offering
        return (o.nvme_tb if o is not None and o.nvme_tb else self.hardware.nvme_tb).value * 1e12


def available_pricings(offering: OfferingSpec) -> list[str]:
    have = {
        "on_demand": offering.on_demand_usd_per_node_hour is not None,
        "spot": offering.spot_usd_per_node_hour is not None,
        "committed": offering.committed_usd_per_node_hour is not None,
        "on_prem": offering.on_prem is not None,
    }
    return [p for p in PRICINGS if have[p]]


def make_option(hardware: HardwareSpec, offering: OfferingSpec | None, pricing: str | None) -> Option:
    """An option with its pricing resolved: the list price (on-demand, or on-premises cost) unless one is asked."""
    if offering is None:
        return Option(hardware)
    have = available_pricings(offering)
    if pricing is None:
        pricing = "on_demand" if "on_demand" in have else have[0]
    if pricing not in have:
        raise InfeasibleError(
            f"offering '{offering.name}' has no {pricing} price",
            hint=f"it has: {', '.join(have)}; choose another --pricing or offering",
        )
    return Option(hardware, offering, pricing)  # type: ignore[arg-type]


def evaluate_grid(
    model: ModelSpec, option: Option, training: TrainingSpec, grid: Grid, *, detail: bool = False
) -> dict[str, np.ndarray]:
    """Per-GPU memory total, host RAM, NVMe, step-time terms, wall time, money and energy of every
    candidate (arrays of len(grid)); with detail, also every per-GPU memory term (`mem.<term>`).
    Keys follow estimate()'s report names."""
    hw = hardware_figures(model, option.hardware, training, grid, detail=detail)
    return option_figures(model, option, training, grid, hw)


def hardware_figures(
    model: ModelSpec,
    hardware: HardwareSpec,
    training: TrainingSpec,
    grid: Grid,
    *,
    detail: bool = False,
    keys: tuple[str, ...] | None = None,
) -> dict[str, np.ndarray]:
    """What a candidate costs in memory and step time: everything that depends on the hardware and the
    layout but not on a price list, so that every offering of one hardware shares one evaluation
    (`option_figures` adds the wall time, money and energy of an offering).

    A grid from build_grid is evaluated by its factors (planner.grid.GridFactors), with numpy
    broadcasting: per ZeRO stage, settings rows × checkpointing × (nodes, micro-batch, gas) pairs, so
    a term that depends on the micro-batch alone (the GEMMs, attention) is computed once per pair
    and checkpointing value, not once per candidate. Each element is the same arithmetic on the same
    inputs as one candidate at a time (tests/search/test_agreement.py, tests/search/test_catalog.py).
    keys: only these figures are kept (less memory to fill), else all."""
    n = len(grid)
    out: dict[str, np.ndarray] = {}

    def put(key: str, idx: slice, value: Any, shape: tuple[int, ...]) -> None:
        if keys is not None and key not in keys:
            return
        if key not in out:
            out[key] = np.zeros(n, dtype=np.float64)
        out[key][idx] = np.broadcast_to(value, shape).reshape(-1)

    f = grid.factors
    if f is not None:
        K, P = len(f.grad_ckpt), len(f.nodes)
        pair = {k: getattr(f, k).reshape(1, 1, P) for k in ("nodes", "micro_batch", "grad_accum")}
        for _stage, rows, idx in f.stage_blocks():
            c = f.combos[rows]

            def col(j: int, c: np.ndarray = c) -> np.ndarray:
                return c[:, j].reshape(-1, 1, 1)

            layout = _layout(
                training,
                pair["nodes"],
                col(0),
                col(1),
                col(2),
                col(3),
                pair["micro_batch"],
                pair["grad_accum"],
                f.grad_ckpt.reshape(1, K, 1),
            )
            _stage_figures(model, hardware, layout, idx, (len(c), K, P), put, detail)
    else:
        for _stage, idx in grid.stage_slices():
            g = grid.take(idx)
            layout = _layout(
                training,
                g.nodes,
                g.zero_stage,
                g.offload_optimizer,
                g.offload_param,
                g.hpz_partition_size,
                g.micro_batch,
                g.grad_accum,
                g.grad_ckpt,
            )
            _stage_figures(model, hardware, layout, idx, (len(g),), put, detail)
    return out


def _layout(
    training: TrainingSpec,
    nodes: np.ndarray,
    zero_stage: np.ndarray,
    offload_optimizer: np.ndarray,
    offload_param: np.ndarray,
    hpz: np.ndarray,
    micro_batch: np.ndarray,
    grad_accum: np.ndarray,
    grad_ckpt: np.ndarray,
) -> Layout:
    """The candidates' Layout from grid columns (offload codes into OFFLOAD_DEVICES) and the run's
    settings; ZeRO++ quantization off, overlap_comm, local loss and gather_with_grad on (as build_grid
    plans)."""
    return Layout(
        **run_settings(training),
        nodes=nodes,
        zero_stage=zero_stage,
        offload_optimizer=offload_optimizer != 0,
        offload_param=offload_param != 0,
        nvme_optimizer=offload_optimizer == 2,
        nvme_param=offload_param == 2,
        micro_batch=micro_batch,
        grad_accum=grad_accum,
        grad_ckpt=grad_ckpt,
        hpz_partition_size=hpz,
    )


def _stage_figures(
    model: ModelSpec,
    hw: HardwareSpec,
    layout: Layout,
    idx: slice,
    shape: tuple[int, ...],
    put: Any,
    detail: bool,
) -> None:
    """Memory and step-time terms of one ZeRO stage's candidates, written at idx."""
    terms, ms, _act = ev.gpu_memory_terms(model, hw, layout)
    if detail:
        for k, v in terms.items():
            put(f"mem.{k}", idx, v, shape)
    put("gpu_total_bytes", idx, ev.ordered_sum(terms), shape)
    put("host_per_node_bytes", idx, ev.ordered_sum(ev.host_memory_terms(ms, hw.gpus_per_node)), shape)
    put("nvme_per_node_bytes", idx, ms.nvme_per_node, shape)
    st = ev.step_terms(model, hw, layout)
    for k in ("compute_s", "overhead_s", "comm_total_s", "comm_exposed_s", "offload_s", "step_s"):
        put(k, idx, st[k], shape)


def option_figures(
    model: ModelSpec,
    option: Option,
    training: TrainingSpec,
    grid: Grid,
    hw: dict[str, np.ndarray],
    walls: dict[tuple[float, float], dict[str, Any]] | None = None,
) -> dict[str, np.ndarray]:
    """hardware_figures of the option's hardware plus the wall time, GPU-hours, money and energy at the
    option's price list (restart time, spot reclaims, storage price, PUE and grid carbon). walls: the
    wall times of this hardware's grid computed so far (run_at_price), shared by its offerings."""
    off = option.offering
    n = len(grid)
    out = dict(hw)
    hardware = option.hardware
    run = run_at_price(model, option, training, grid.nodes, grid.global_batch, hw["step_s"], walls=walls)
    # The wall time does not depend on the price; only spot reclaims change it.
    base = (
        run
        if option.spot_rate() == 0.0
        else run_at_price(
            model, option, training, grid.nodes, grid.global_batch, hw["step_s"], priced=False, walls=walls
        )
    )
    if off is not None:
        # Energy as estimate() reports it: from the failure-only wall time (no spot reclaims).
        en = cost.energy(
            grid.nodes,
            hardware.node_power_kw.value,
            base["wall_s"],
            off.pue.value,
            off.grid_gco2_per_kwh.value,
        )
    else:
        # Unpriced: IT energy at PUE 1 and no grid figure (no CO2).
        en = cost.energy(grid.nodes, hardware.node_power_kw.value, base["wall_s"], 1.0, 0.0)
    figures = {
        "wall_s": run["wall_s"],
        "gpu_hours": run["money"].gpu_hours,
        "total_usd": run["money"].total_usd,
        "storage_usd": run["money"].storage_usd,
        "energy_kwh": en.kwh,
        "co2_kg": en.co2_kg if off is not None else np.nan,
    }
    for k, v in figures.items():
        v = np.asarray(v, dtype=np.float64)
        out[k] = v if v.shape == (n,) else np.full(n, v)
    return out


def run_at_price(
    model: ModelSpec,
    option: Option,
    training: TrainingSpec,
    nodes: Any,
    global_batch: Any,
    step_s: Any,
    *,
    priced: bool = True,
    walls: dict[tuple[float, float], dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """planner.evaluate.training_wall and training_cost of plans (arrays, or one plan's numbers) on this
    option: its restart time and storage price, and (priced) its price and spot reclaims; estimate()'s arithmetic
    at each price it reports (`compare` prices its best plans at every published pricing so).

    walls: wall times already computed for these same plans (one hardware's grid), by restart time and
    reclaim rate: five H100 offerings at 900 s and no reclaims share one (the same arithmetic on the
    same inputs, so the same figures). Only the wall time is kept there (peak memory), so a run taken
    from it has wall_s and money, not the wall-time terms."""
    off = option.offering
    spot = option.spot_rate() if priced else 0.0
    key = (ev.restart_s_of(off), spot)
    run = walls.get(key) if walls is not None else None
    if run is None:
        run = ev.training_wall(
            model,
            option.hardware,
            training,
            off,
            nodes=nodes,
            global_batch=global_batch,
            step_s=step_s,
            spot=spot,
        )
        if walls is not None:
            walls[key] = {"wall_s": run["wall_s"]}  # what is shared; the rest is let go
    usd = option.usd_per_node_hour() if priced else 0.0
    return ev.training_cost(model, option.hardware, training, off, run, nodes=nodes, usd_per_node_hour=usd)
