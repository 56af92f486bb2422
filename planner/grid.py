"""The candidate plans `evaplan plan` searches: every combination of node count, ZeRO stage, offload,
ZeRO++ hpZ, activation checkpointing and micro-batch that reaches the global batch, as flat numpy
columns (one element per candidate), so that planner.evaluate computes them all at once.

The grid holds only combinations DeepSpeed accepts (the rules of `planner.spec.ParallelPlan`):
offload_optimizer needs stage ≥ 1 and `nvme` needs stage 3; offload_param and hpZ need stage 3;
hpZ groups divide the node (zero_hpz_partition_size is meant to be intra-node, arXiv 2306.10209 §3.2),
and evaplan does not combine hpZ with parameter offload (the secondary shard lives in HBM).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from planner.errors import InfeasibleError

OFFLOAD_DEVICES: tuple[str, ...] = ("none", "cpu", "nvme")  # column codes 0, 1, 2


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
        cols = {f.name: getattr(self, f.name) for f in fields(self)}
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


def per_gpu_batch(global_batch: int, world: int, tolerance: float) -> int | None:
    """Samples per GPU per optimizer step: exact when the world size divides the global batch, else the
    nearest multiple of the world size if it lies within ±tolerance of the requested global batch."""
    if global_batch % world == 0:
        return global_batch // world
    p = max(1, round(global_batch / world))
    return p if abs(p * world - global_batch) <= tolerance * global_batch else None


def settings_combos(space: SearchSpace, gpus_per_node: int) -> np.ndarray:
    """(zero_stage, offload_optimizer code, offload_param code, hpz) rows DeepSpeed accepts."""
    oo_codes = [OFFLOAD_DEVICES.index(d) for d in space.offload_optimizer]
    op_codes = [OFFLOAD_DEVICES.index(d) for d in space.offload_param]
    hpz_sizes = [h for h in range(2, gpus_per_node + 1) if gpus_per_node % h == 0 and h & (h - 1) == 0] \
        if space.hpz else []
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
    """Every candidate for node counts 1..max_nodes; micro-batches are the divisors of the samples per
    GPU (so micro_batch × gradient_accumulation_steps × GPUs is the global batch exactly)."""
    combos = settings_combos(space, gpus_per_node)
    ckpt = np.array(sorted(set(space.grad_ckpt)), dtype=bool)
    if not len(combos) or not len(ckpt):
        raise InfeasibleError("the search space is empty", hint="allow more ZeRO stages or offload devices")
    per_setting = len(combos) * len(ckpt)
    nodes_l, b_l, gas_l = [], [], []
    for m in range(1, space.max_nodes + 1):
        p = per_gpu_batch(global_batch, m * gpus_per_node, tolerance)
        if p is None:
            continue
        bs = [b for b in divisors(p) if space.max_micro_batch is None or b <= space.max_micro_batch]
        nodes_l.append(np.full(len(bs), m, dtype=np.int64))
        b_l.append(np.array(bs, dtype=np.int64))
        gas_l.append(p // np.array(bs, dtype=np.int64))
    if not nodes_l:
        raise InfeasibleError(
            f"no node count from 1 to {space.max_nodes} reaches the global batch {global_batch:,} with "
            f"{gpus_per_node} GPUs per node within ±{tolerance:.0%}",
            hint="raise --batch-tolerance or choose a global batch divisible by a multiple of the node size",
        )
    nodes = np.concatenate(nodes_l)
    b = np.concatenate(b_l)
    gas = np.concatenate(gas_l)
    # Candidate order: node count, micro-batch, then settings, then checkpointing (deterministic).
    k = len(nodes)
    rep = np.repeat(np.arange(k), per_setting)
    combo_idx = np.tile(np.repeat(np.arange(len(combos)), len(ckpt)), k)
    ck = np.tile(ckpt, k * len(combos))
    c = combos[combo_idx]
    grid = Grid(nodes=nodes[rep], gpus_per_node=gpus_per_node, zero_stage=c[:, 0], offload_optimizer=c[:, 1],
                offload_param=c[:, 2], hpz_partition_size=c[:, 3], grad_ckpt=ck, micro_batch=b[rep],
                grad_accum=gas[rep])
    # Stage-major order, so that each stage's candidates are one contiguous slice (evaluated together).
    return grid.take(np.argsort(grid.zero_stage, kind="stable"))
