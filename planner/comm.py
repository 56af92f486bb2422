"""Communication per optimizer step: what DeepSpeed 0.19.8 actually issues, and how long it takes.

Read from DeepSpeed's code (runtime/zero/stage_1_and_2.py, stage3.py, partitioned_param_coordinator.py)
and checked with its comms logger on a 2-rank gloo run (docs/planner-model.md, "Communication"):

- ZeRO-0: one all-reduce of all gradients per optimizer step, in the communication dtype (bf16 when
  bf16 is on: engine.communication_data_type), bucketed by reduce_bucket_size.
- ZeRO-1: the same all-reduce once per step (at the accumulation boundary) — DeepSpeed's defaults
  (`reduce_scatter: true`, `use_multi_rank_bucket_allreduce: true`) all-reduce each bucket rather than
  reduce-scatter it — then an all-gather of the updated 16-bit params (allgather_bucket_size chunks).
- ZeRO-2: the gradient all-reduce after every backward (gradient_accumulation_steps times per step),
  then the same all-gather of updated params once per step.
- ZeRO-3: every micro-batch all-gathers each parameter above stage3_param_persistence_threshold in
  forward, re-gathers in backward what the coordinator released (parameters whose reuse lies more than
  stage3_max_reuse_distance elements ahead), and reduce-scatters all gradients (communication dtype).
  Persistent parameters are all-gathered once per step after the optimizer updates them.
- ZeRO++ (arXiv 2306.10209): qwZ all-gathers int8 weights in forward (½ the bytes), hpZ re-gathers in
  backward from a secondary shard inside a group of zero_hpz_partition_size GPUs (intra-node), qgZ
  replaces the gradient reduce-scatter by an int4 all-to-all (¼ of the bf16 bytes).
- The CLIP loss all-gathers image and text features of the micro-batch every micro-step (open_clip
  `gather_features` with torch.distributed.nn, whose backward is a reduce-scatter of the same size).
  These calls bypass deepspeed.comm, so its logger does not see them (`ds_logged=False`).

Sizes: `message_bytes` is the collective's size S as nccl-tests define it (all-gather: the gathered
output; reduce-scatter: the input; all-reduce: the tensor), summed over the calls of one optimizer
step. A ring moves (n−1)/n·S bytes per GPU for all-gather / reduce-scatter / all-to-all and
2(n−1)/n·S for all-reduce (nccl-tests PERFORMANCE.md). `logged_bytes` is what DeepSpeed's comms
logger sums (all_gather_into_tensor logs the per-rank input S/n; the others log S).

Time (α-β ring): calls × latency + ring bytes / bus bandwidth, with NCCL's ring latency
(src/graph/tuning.cc: base + per-step latency, network steps costing more) and the profile's
measured bus bandwidths. Every function is arithmetic on floats or numpy arrays.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from planner import deepspeed_defaults as dsd
from planner.layout import Layout
from planner.params import count_params, zero3_residency
from planner.spec import HardwareSpec, ModelSpec, ParallelPlan
from planner.terms import Term

Num = Any
Op = Literal["all_gather", "reduce_scatter", "all_reduce", "all_to_all"]

# NCCL ring base latency: ncclTunerConstantsDefaults.baseLatencies, Ring/Simple 8.4 µs, in NVIDIA/nccl
# src/graph/tuning.cc (https://github.com/NVIDIA/nccl/blob/master/src/graph/tuning.cc).
NCCL_RING_BASE_LATENCY_US = 8.4
# ZeRO++ wire ratios (arXiv 2306.10209 §3): int8 weights ½ of bf16, int4 gradients ¼ of bf16.
QWZ_RATIO = 0.5
QGZ_RATIO = 0.25


def wire_bytes(precision: str, stack: str) -> int:
    """Bytes per element that parameters, gradients and CLIP features travel in.

    DeepSpeed's 16-bit engines (bf16/fp16, the bundled trainer) hold 16-bit weights and reduce
    16-bit gradients. Under autocast (stack `amp`: fp32 weights, OpenCLIP's trainer) everything on
    the wire is fp32: PyTorch DDP all-reduces gradients in the parameters' dtype unless a
    compression hook is registered (PyTorch docs, "DDP Communication Hooks", fp16_compress_hook
    "casts GradBucket tensor to half-precision", https://pytorch.org/docs/stable/ddp_comm_hooks.html),
    and OpenCLIP registers none (mlfoundations/open_clip src/open_clip_train/main.py wraps the model
    in plain DistributedDataParallel); its features leave F.normalize in fp32 (autocast runs `norm`
    in fp32, https://pytorch.org/docs/stable/amp.html#cuda-ops-that-can-autocast-to-float32).
    fp32 training is fp32 throughout."""
    return 4 if precision == "fp32" or stack == "amp" else 2


@dataclass(frozen=True)
class Collective:
    """One kind of collective call and its volume per optimizer step, per GPU."""

    name: str
    op: Op
    phase: str  # forward | backward | step | loss
    group_size: Num
    calls: Num
    message_bytes: Num
    ring_bytes_per_gpu: Num
    inter_node_bytes_per_gpu: Num
    intra_node_bytes_per_gpu: Num
    logged_bytes: Num
    overlappable: bool  # hidden behind compute when overlap_comm (prefetch, reduction stream)
    ds_logged: bool
    cross_node: Num  # True where the group spans nodes


def ring_factor(op: Op, n: Num) -> Num:
    n = np.asarray(n, dtype=np.float64) if isinstance(n, np.ndarray) else float(n)
    return np.where(op == "all_reduce", 2.0 * (n - 1) / n, (n - 1) / n)


def _collective(
    name: str,
    op: Op,
    phase: str,
    n: Num,
    gpus_per_node: Num,
    calls: Num,
    size: Num,
    overlappable: bool,
    ds_logged: bool = True,
) -> Collective:
    ring = ring_factor(op, n) * size
    cross = np.asarray(n) > gpus_per_node
    # A flat ring over M nodes crosses the network once per node: each node sends (n−1)/n·S over its
    # NICs, i.e. 1/G of what each GPU sends, on average, goes inter-node.
    inter = np.where(cross, ring / gpus_per_node, 0.0)
    logged = size / n if op == "all_gather" else size
    return Collective(
        name, op, phase, n, calls, size, ring, inter, ring - inter, logged, overlappable, ds_logged, cross
    )


def zero_collectives(
    *,
    psi: Num,
    gathered: Num,
    persistent: Num,
    regathered: Num,
    gather_calls: Num,
    regather_calls: Num,
    world: Num,
    gpus_per_node: Num,
    zero_stage: int,
    grad_accum: Num,
    micro_batch: Num,
    embed_dim: int,
    comm_dtype_bytes: Num = 2,  # wire_bytes(precision, stack)
    hpz_partition_size: Num = 1,
    quantized_weights: Num = False,
    quantized_gradients: Num = False,
    gather_with_grad: Num = True,
) -> list[Collective]:
    """The collectives of one optimizer step for one ZeRO stage (a Python int: the set of
    collectives differs by stage; every other argument may be an array)."""
    n, G, gas = world, gpus_per_node, grad_accum
    p16 = comm_dtype_bytes  # parameters travel in the weights' dtype (wire_bytes)
    out: list[Collective] = []
    reduce_calls = np.ceil(psi / dsd.REDUCE_BUCKET_SIZE)
    if zero_stage in (0, 1, 2):
        times = gas if zero_stage == 2 else 1
        out.append(
            _collective(
                "gradient all-reduce",
                "all_reduce",
                "backward",
                n,
                G,
                reduce_calls * times,
                psi * comm_dtype_bytes * times,
                True,
            )
        )
        if zero_stage in (1, 2):
            out.append(
                _collective(
                    "updated-parameter all-gather",
                    "all_gather",
                    "step",
                    n,
                    G,
                    np.ceil(psi / dsd.ALLGATHER_BUCKET_SIZE),
                    psi * p16,
                    False,
                )
            )
    else:
        qw = np.where(quantized_weights, QWZ_RATIO, 1.0)
        out.append(
            _collective(
                "parameter all-gather (forward)",
                "all_gather",
                "forward",
                n,
                G,
                gather_calls * gas,
                gathered * p16 * qw * gas,
                True,
            )
        )
        hpz = np.asarray(hpz_partition_size)
        bwd_group = np.where(hpz > 1, hpz, n)
        out.append(
            _collective(
                "parameter all-gather (backward)",
                "all_gather",
                "backward",
                bwd_group,
                G,
                regather_calls * gas,
                regathered * p16 * gas,
                True,
            )
        )
        out.append(
            _collective(
                "persistent-parameter all-gather",
                "all_gather",
                "step",
                n,
                G,
                np.where(persistent > 0, 1.0, 0.0),
                persistent * p16,
                False,
            )
        )
        qg = np.asarray(quantized_gradients, dtype=bool)
        rs = _collective(
            "gradient reduce-scatter",
            "reduce_scatter",
            "backward",
            n,
            G,
            reduce_calls * gas,
            psi * comm_dtype_bytes * gas * np.where(qg, QGZ_RATIO, 1.0),
            True,
        )
        out.append(rs)
    feats = micro_batch * n * embed_dim * p16  # one tower's features, gathered
    out.append(
        _collective(
            "CLIP feature all-gather",
            "all_gather",
            "loss",
            n,
            G,
            2.0 * gas,
            2.0 * feats * gas,
            False,
            ds_logged=False,
        )
    )
    out.append(
        _collective(
            "CLIP feature-gradient reduce-scatter",
            "reduce_scatter",
            "loss",
            n,
            G,
            np.where(gather_with_grad, 2.0 * gas, 0.0),
            np.where(gather_with_grad, 2.0 * feats * gas, 0.0),
            False,
            ds_logged=False,
        )
    )
    return out


def model_collectives(
    model: ModelSpec,
    gpus_per_node: Num,
    zero_stage: int,
    layout: Layout | ParallelPlan,
    comm_dtype_bytes: Num,
) -> list[Collective]:
    """zero_collectives of a model's ZeRO-3 residency (DeepSpeed's persistence threshold and reuse
    distance, planner/deepspeed_defaults.py) for one ZeRO stage of a layout: one plan, or a Layout
    of many candidates (arrays) from planner.evaluate."""
    counts = count_params(model)
    thr, reuse = dsd.STAGE3_PARAM_PERSISTENCE_THRESHOLD, dsd.STAGE3_MAX_REUSE_DISTANCE
    res = zero3_residency(model, thr, reuse)
    return zero_collectives(
        psi=counts.total,
        gathered=res.gathered,
        persistent=res.persistent,
        regathered=res.regathered_backward,
        gather_calls=res.modules_gathered,
        regather_calls=res.modules_regathered,
        world=layout.nodes * gpus_per_node,
        gpus_per_node=gpus_per_node,
        zero_stage=zero_stage,
        grad_accum=layout.grad_accum,
        micro_batch=layout.micro_batch,
        embed_dim=model.embed_dim,
        comm_dtype_bytes=comm_dtype_bytes,
        hpz_partition_size=layout.hpz_partition_size,
        quantized_weights=layout.quantized_weights,
        quantized_gradients=layout.quantized_gradients,
        gather_with_grad=layout.gather_with_grad,
    )


def collective_bytes(model: ModelSpec, plan: ParallelPlan, stack: str = "eager") -> list[Collective]:
    """Per-GPU collectives of one optimizer step for a model and a plan (DeepSpeed 0.19.8 behaviour,
    evaplan's rendered ZeRO settings from planner/deepspeed_defaults.py) on a software stack (the
    bundled trainer's `eager` by default)."""
    return model_collectives(
        model, plan.gpus_per_node, plan.zero_stage, plan, wire_bytes(plan.precision, stack)
    )


# ------------------------------------------------------------------------------------- time
def ring_latency_s(op: Op, n: Num, gpus_per_node: Num, alpha_intra_us: float, alpha_inter_us: float) -> Num:
    """NCCL's ring latency model: base + (steps − network steps)·α_intra + network steps·α_inter,
    steps = n−1 (2(n−1) for all-reduce), one network step per node per pass (tuning.cc)."""
    n = np.asarray(n, dtype=np.float64)
    nodes = np.maximum(1.0, np.ceil(n / gpus_per_node))
    passes = 2.0 if op == "all_reduce" else 1.0
    steps = passes * (n - 1)
    net = np.where(nodes > 1, passes * nodes, 0.0)
    return (NCCL_RING_BASE_LATENCY_US + (steps - net) * alpha_intra_us + net * alpha_inter_us) * 1e-6


def bus_bandwidth_bytes_per_s(op: Op, n: Num, hw: HardwareSpec) -> Num:
    """Measured busbw of the profile: intra-node (all-reduce or all-gather/reduce-scatter figure),
    the small-group figure for groups smaller than a node where the profile has one (MI300X), and
    the multi-node figure once the group spans nodes."""
    c = hw.collective
    G = hw.gpus_per_node
    intra = c.intra_node_allreduce_gbps.value if op == "all_reduce" else c.intra_node_allgather_gbps.value
    small = c.small_group_gbps.value if c.small_group_gbps is not None else intra
    n = np.asarray(n)
    gbps = np.where(n > G, c.inter_node_gbps.value, np.where(n < G, small, intra))
    return gbps * 1e9


def collective_time_s(c: Collective, hw: HardwareSpec) -> Num:
    n = c.group_size
    lat = ring_latency_s(
        c.op, n, hw.gpus_per_node, hw.collective.alpha_intra_us.value, hw.collective.alpha_inter_us.value
    )
    bw = bus_bandwidth_bytes_per_s(c.op, n, hw)
    return np.where(np.asarray(n) > 1, c.calls * lat + c.ring_bytes_per_gpu / bw, 0.0)


@dataclass(frozen=True)
class CommTime:
    total_s: Num
    overlappable_s: Num
    exposed_s: Num


def exposed_comm_time_s(
    collectives: list[Collective], hw: HardwareSpec, compute_s: Num, overlap_comm: Num
) -> CommTime:
    """Overlap assumption (stated in docs/planner-model.md): with overlap_comm, gradient reduction runs on
    its own stream during backward and ZeRO-3 prefetches parameters during compute, so those
    collectives hide behind the step's compute up to its length; the post-step all-gathers and the
    CLIP feature gathers sit on the critical path. step ≈ compute + max(0, overlappable − compute) +
    non-overlappable."""
    total = 0.0
    over = 0.0
    for c in collectives:
        t = collective_time_s(c, hw)
        total = total + t
        if c.overlappable:
            over = over + t
    return CommTime(total, over, exposed_term(total, over, compute_s, overlap_comm).value)


def exposed_term(total_s: Num, overlappable_s: Num, compute_s: Num, overlap_comm: Num) -> Term:
    """With overlap_comm (1/0) the overlappable collectives hide behind compute up to its length."""
    return Term(
        "total_s - overlap_comm * min(overlappable_s, compute_s)",
        {
            "total_s": total_s,
            "overlappable_s": overlappable_s,
            "compute_s": compute_s,
            "overlap_comm": overlap_comm,
        },
    )
