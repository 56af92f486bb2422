"""The candidate plans `evaplan plan` searches: every combination of node count, ZeRO stage, offload,
ZeRO++ hpZ, activation checkpointing and micro-batch that reaches the global batch, as flat numpy
columns (one element per candidate), so that planner.evaluate computes them all at once.

The grid holds only combinations DeepSpeed accepts (the rules of `planner.spec.ParallelPlan`):
offload_optimizer needs stage ≥ 1 and `nvme` needs stage 3; offload_param and hpZ need stage 3;
hpZ groups divide the node (zero_hpz_partition_size is meant to be intra-node, arXiv 2306.10209 §3.2),
and evaplan does not combine hpZ with parameter offload (the secondary shard lives in HBM).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

from planner.errors import InfeasibleError
from planner.spec import ParallelPlan

OFFLOAD_DEVICES: tuple[str, ...] = ("none", "cpu", "nvme")  # column codes 0, 1, 2


def plan_of_row(t: dict[str, np.ndarray], i: int, **settings: Any) -> ParallelPlan:
    """The ParallelPlan in row i of a table of grid columns; `settings` adds the fields the grid does
    not vary (precision, quantisation) or overrides one."""
    row: dict[str, Any] = {
        "nodes": int(t["nodes"][i]),
        "gpus_per_node": int(t["gpus_per_node"][i]),
        "zero_stage": int(t["zero_stage"][i]),
        "offload_optimizer": OFFLOAD_DEVICES[int(t["offload_optimizer"][i])],
        "offload_param": OFFLOAD_DEVICES[int(t["offload_param"][i])],
        "micro_batch": int(t["micro_batch"][i]),
        "grad_accum": int(t["grad_accum"][i]),
        "grad_ckpt": bool(t["grad_ckpt"][i]),
        "hpz_partition_size": int(t["hpz_partition_size"][i]),
    }
    return ParallelPlan(**{**row, **settings})


@dataclass(frozen=True)
class SearchSpace:
    """Which settings the search may choose from (the CLI narrows them with flags)."""

    max_nodes: int = 512
    zero_stages: tuple[int, ...] = (0, 1, 2, 3)
    offload_optimizer: tuple[str, ...] = OFFLOAD_DEVICES
    offload_param: tuple[str, ...] = OFFLOAD_DEVICES
    grad_ckpt: tuple[bool, ...] = (False, True)
    hpz: bool = True
    max_micro_batch: int | None = None
    gpus: int | None = None  # a fixed GPU count (whole nodes) instead of 1..max_nodes nodes


@dataclass(frozen=True)
class GridFactors:
    """How build_grid composed a grid: every settings row (zero_stage, offload_optimizer code,
    offload_param code, hpz) × every checkpointing value × every (nodes, micro-batch, gas) pair, in
    that order. Lets planner.vectorized evaluate a term once per value of the factors it depends on
    (numpy broadcasting) instead of once per candidate; the figures are the same element for element."""

    combos: np.ndarray  # (C, 4): settings_combos rows, sorted by ZeRO stage
    grad_ckpt: np.ndarray  # (K,)
    nodes: np.ndarray  # (P,)
    micro_batch: np.ndarray  # (P,)
    grad_accum: np.ndarray  # (P,)

    def stage_blocks(self) -> list[tuple[int, slice, slice]]:
        """(stage, combo rows, candidate slice) per ZeRO stage: the candidates of combo rows a..b are
        the contiguous slice a·K·P .. b·K·P of the grid."""
        stages = self.combos[:, 0].tolist()
        per_combo = len(self.grad_ckpt) * len(self.nodes)
        out = []
        a = 0
        while a < len(stages):
            b = a
            while b < len(stages) and stages[b] == stages[a]:
                b += 1
            out.append((int(stages[a]), slice(a, b), slice(a * per_combo, b * per_combo)))
            a = b
        return out


@dataclass(frozen=True)
class Grid:
    """Candidate plans of one hardware profile, one element per candidate."""

    nodes: np.ndarray
    gpus_per_node: int
    zero_stage: np.ndarray
    offload_optimizer: np.ndarray  # code into OFFLOAD_DEVICES
    offload_param: np.ndarray
    hpz_partition_size: np.ndarray
    grad_ckpt: np.ndarray
    micro_batch: np.ndarray
    grad_accum: np.ndarray
    factors: GridFactors | None = field(default=None, compare=False)  # None: an arbitrary subset

    def __len__(self) -> int:
        return int(self.nodes.shape[0])

    @property
    def world(self) -> np.ndarray:
        return self.nodes * self.gpus_per_node

    @property
    def global_batch(self) -> np.ndarray:
        return self.micro_batch * self.grad_accum * self.world

    def stage_slices(self) -> list[tuple[int, slice]]:
        """(stage, slice) per ZeRO stage present; the grid is stage-major (build_grid sorts it)."""
        stages, starts = np.unique(self.zero_stage, return_index=True)
        ends = [*starts[1:], len(self)]
        if not np.all(np.diff(self.zero_stage) >= 0):
            raise ValueError("grid is not sorted by zero_stage")
        return [(int(s), slice(int(a), int(b))) for s, a, b in zip(stages, starts, ends, strict=True)]

    def take(self, idx: np.ndarray | slice) -> Grid:
        """The candidates at idx (an arbitrary subset: no factors)."""
        cols = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "factors"}
        return Grid(**{k: (v if k == "gpus_per_node" else v[idx]) for k, v in cols.items()})


def divisors(n: int) -> list[int]:
    small, large = [], []
    i = 1
    while i * i <= n:
        if n % i == 0:
            small.append(i)
            if i != n // i:
                large.append(n // i)
        i += 1
    return small + large[::-1]


def micro_batch_ladder(limit: int) -> list[int]:
    """1, 2, 3, 4, 6, 8, 12, 16, 24, ... up to limit: powers of two and 1.5 × powers of two."""
    out, k = [], 1
    while k <= limit:
        out += [k] + ([k * 3 // 2] if k >= 2 and k * 3 // 2 <= limit else [])
        k *= 2
    return sorted(set(out))


def shapes_for(
    global_batch: int, world: int, tolerance: float, max_micro_batch: int | None
) -> list[tuple[int, int]]:
    """(micro_batch, gradient_accumulation_steps) pairs whose global batch micro × gas × world is the
    requested one (every divisor of the samples per GPU) or, with a tolerance, within ±tolerance of it
    (micro-batches from a 1-2-3-4-6-8 ladder, gas rounded to the nearest step)."""
    shapes: dict[int, int] = {}
    if global_batch % world == 0:
        p = global_batch // world
        shapes.update({b: p // b for b in divisors(p)})
    if tolerance > 0:
        target = global_batch / world
        for b in micro_batch_ladder(max(1, int(target * (1 + tolerance)))):
            gas = max(1, round(target / b))
            if b not in shapes and abs(b * gas * world - global_batch) <= tolerance * global_batch:
                shapes[b] = gas
    return sorted((b, g) for b, g in shapes.items() if max_micro_batch is None or b <= max_micro_batch)


def settings_combos(space: SearchSpace, gpus_per_node: int) -> np.ndarray:
    """(zero_stage, offload_optimizer code, offload_param code, hpz) rows DeepSpeed accepts."""
    oo_codes = [OFFLOAD_DEVICES.index(d) for d in space.offload_optimizer]
    op_codes = [OFFLOAD_DEVICES.index(d) for d in space.offload_param]
    hpz_sizes = (
        [h for h in range(2, gpus_per_node + 1) if gpus_per_node % h == 0 and h & (h - 1) == 0]
        if space.hpz
        else []
    )
    rows: list[tuple[int, int, int, int]] = []
    for stage in sorted(set(space.zero_stages)):
        for oo in oo_codes:
            if (oo and stage == 0) or (oo == 2 and stage != 3):
                continue
            for op in op_codes:
                if op and stage != 3:
                    continue
                rows.append((stage, oo, op, 1))
                if stage == 3 and op == 0:
                    rows.extend((stage, oo, op, h) for h in hpz_sizes)
    return np.array(rows, dtype=np.int64).reshape(-1, 4)


def build_grid(space: SearchSpace, gpus_per_node: int, global_batch: int, tolerance: float) -> Grid:
    """Every candidate for node counts 1..max_nodes with the (micro-batch, gradient accumulation) pairs
    of `shapes_for`."""
    combos = settings_combos(space, gpus_per_node)
    ckpt = np.array(sorted(set(space.grad_ckpt)), dtype=bool)
    if not len(combos) or not len(ckpt):
        raise InfeasibleError("the search space is empty", hint="allow more ZeRO stages or offload devices")
    per_setting = len(combos) * len(ckpt)
    nodes_l, b_l, gas_l = [], [], []
    if space.gpus is not None:
        if space.gpus % gpus_per_node:
            raise InfeasibleError(
                f"--gpus {space.gpus} is not a multiple of the {gpus_per_node} GPUs per node",
                hint="use whole nodes",
            )
        node_counts = [space.gpus // gpus_per_node]
    else:
        node_counts = list(range(1, space.max_nodes + 1))
    for m in node_counts:
        shapes = shapes_for(global_batch, m * gpus_per_node, tolerance, space.max_micro_batch)
        if not shapes:
            continue
        nodes_l.append(np.full(len(shapes), m, dtype=np.int64))
        b_l.append(np.array([b for b, _ in shapes], dtype=np.int64))
        gas_l.append(np.array([g for _, g in shapes], dtype=np.int64))
    if not nodes_l:
        where = (
            f"{space.gpus} GPUs cannot reach"
            if space.gpus is not None
            else f"no node count from 1 to {space.max_nodes} reaches"
        )
        raise InfeasibleError(
            f"{where} the global batch {global_batch:,} with "
            f"{gpus_per_node} GPUs per node within ±{tolerance:.0%}",
            hint="raise --batch-tolerance or choose a global batch divisible by a multiple of the node size",
        )
    nodes = np.concatenate(nodes_l)
    b = np.concatenate(b_l)
    gas = np.concatenate(gas_l)
    # Candidate order: settings (combos are sorted by ZeRO stage, so each stage's candidates form one
    # contiguous slice), then checkpointing, then node count and micro-batch. Deterministic.
    k = len(nodes)
    c = [np.repeat(combos[:, j], len(ckpt) * k) for j in range(4)]  # contiguous columns
    return Grid(
        nodes=np.tile(nodes, per_setting),
        gpus_per_node=gpus_per_node,
        zero_stage=c[0],
        offload_optimizer=c[1],
        offload_param=c[2],
        hpz_partition_size=c[3],
        grad_ckpt=np.tile(np.repeat(ckpt, k), len(combos)),
        micro_batch=np.tile(b, per_setting),
        grad_accum=np.tile(gas, per_setting),
        factors=GridFactors(combos=combos, grad_ckpt=ckpt, nodes=nodes, micro_batch=b, grad_accum=gas),
    )
