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
    size: Term  # message_bytes as a formula over its inputs (the figure comm.<name> prints)


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
    size: Term,
    overlappable: bool,
    ds_logged: bool = True,
) -> Collective:
    """One collective of `calls` calls whose bytes per step (nccl-tests S) the term `size` computes."""
    message = size.value
    ring = ring_factor(op, n) * message
    cross = np.asarray(n) > gpus_per_node
    # A flat ring over M nodes crosses the network once per node: each node sends (n−1)/n·S over its
    # NICs, i.e. 1/G of what each GPU sends, on average, goes inter-node.
    inter = np.where(cross, ring / gpus_per_node, 0.0)
    logged = message / n if op == "all_gather" else message
    return Collective(
        name,
        op,
        phase,
        n,
        calls,
        message,
        ring,
        inter,
        ring - inter,
        logged,
        overlappable,
        ds_logged,
        cross,
        size,
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
    collectives differs by stage; every other argument may be an array). Parameters, gradients and
    features travel at comm_dtype_bytes per element (wire_bytes)."""
    n, G, gas, wire = world, gpus_per_node, grad_accum, comm_dtype_bytes
    if zero_stage in (0, 1, 2):
        out = _data_parallel_collectives(psi, n, G, zero_stage, gas, wire)
    else:
        residency = (gathered, regathered, persistent, gather_calls, regather_calls)
        out = _zero3_collectives(
            psi, residency, n, G, gas, wire, hpz_partition_size, quantized_weights, quantized_gradients
        )
    return out + _clip_feature_collectives(n, G, gas, micro_batch, embed_dim, wire, gather_with_grad)


def _data_parallel_collectives(
    psi: Num, n: Num, G: Num, zero_stage: int, gas: Num, wire: Num
) -> list[Collective]:
    """ZeRO-0/1/2: the gradient all-reduce (every micro-batch at ZeRO-2, once per step before), and
    from ZeRO-1 on the all-gather of the updated 16-bit parameters."""
    times = gas if zero_stage == 2 else 1
    reduce_calls = np.ceil(psi / dsd.REDUCE_BUCKET_SIZE)
    grads = Term("psi * wire_bytes * reductions", {"psi": psi, "wire_bytes": wire, "reductions": times})
    out = [
        _collective("gradient all-reduce", "all_reduce", "backward", n, G, reduce_calls * times, grads, True)
    ]
    if zero_stage in (1, 2):
        params = Term("psi * wire_bytes", {"psi": psi, "wire_bytes": wire})
        calls = np.ceil(psi / dsd.ALLGATHER_BUCKET_SIZE)
        out.append(
            _collective("updated-parameter all-gather", "all_gather", "step", n, G, calls, params, False)
        )
    return out


def _zero3_collectives(
    psi: Num,
    residency: tuple[Num, Num, Num, Num, Num],
    n: Num,
    G: Num,
    gas: Num,
    wire: Num,
    hpz_partition_size: Num,
    quantized_weights: Num,
    quantized_gradients: Num,
) -> list[Collective]:
    """ZeRO-3 (with ZeRO++ qwZ, hpZ, qgZ): parameter gathers in forward and backward, the persistent
    parameters once per step, the gradient reduce-scatter. residency: gathered, regathered and
    persistent elements, gather and regather calls per micro-batch (planner.params.zero3_residency)."""
    gathered, regathered, persistent, gather_calls, regather_calls = residency
    qw = np.asarray(quantized_weights, dtype=bool)
    fwd = Term(
        "gathered * wire_bytes * where(quantized_weights, qwz_ratio, 1.0) * gas",
        {
            "gathered": gathered,
            "wire_bytes": wire,
            "quantized_weights": qw,
            "qwz_ratio": QWZ_RATIO,
            "gas": gas,
        },
    )
    hpz = np.asarray(hpz_partition_size)
    bwd_group = np.where(hpz > 1, hpz, n)
    bwd = Term("regathered * wire_bytes * gas", {"regathered": regathered, "wire_bytes": wire, "gas": gas})
    kept = Term("persistent * wire_bytes", {"persistent": persistent, "wire_bytes": wire})
    qg = np.asarray(quantized_gradients, dtype=bool)
    grads = Term(
        "psi * wire_bytes * gas * where(quantized_gradients, qgz_ratio, 1.0)",
        {"psi": psi, "wire_bytes": wire, "gas": gas, "quantized_gradients": qg, "qgz_ratio": QGZ_RATIO},
    )
    reduce_calls = np.ceil(psi / dsd.REDUCE_BUCKET_SIZE) * gas
    return [
        _collective(
            "parameter all-gather (forward)", "all_gather", "forward", n, G, gather_calls * gas, fwd, True
        ),
        _collective(
            "parameter all-gather (backward)",
            "all_gather",
            "backward",
            bwd_group,
            G,
            regather_calls * gas,
            bwd,
            True,
        ),
        _collective(
            "persistent-parameter all-gather",
            "all_gather",
            "step",
            n,
            G,
            np.where(persistent > 0, 1.0, 0.0),
            kept,
            False,
        ),
        _collective("gradient reduce-scatter", "reduce_scatter", "backward", n, G, reduce_calls, grads, True),
    ]


def _clip_feature_collectives(
    n: Num, G: Num, gas: Num, micro_batch: Num, embed_dim: int, wire: Num, gather_with_grad: Num
) -> list[Collective]:
    """The CLIP loss gathers both towers' features every micro-step, and (gather_with_grad)
    reduce-scatters their gradients; deepspeed.comm's logger does not see them."""
    inputs = {"b": micro_batch, "N": n, "e": embed_dim, "wire_bytes": wire, "gas": gas}
    gather = Term("2.0 * (b * N * e * wire_bytes) * gas", inputs)
    with_grad = np.asarray(gather_with_grad, dtype=bool)
    scatter = Term(
        "where(gather_with_grad, 2.0 * (b * N * e * wire_bytes) * gas, 0.0)",
        {"gather_with_grad": with_grad, **inputs},
    )
    scatter_calls = np.where(with_grad, 2.0 * gas, 0.0)
    return [
        _collective(
            "CLIP feature all-gather", "all_gather", "loss", n, G, 2.0 * gas, gather, False, ds_logged=False
        ),
        _collective(
            "CLIP feature-gradient reduce-scatter",
            "reduce_scatter",
            "loss",
            n,
            G,
            scatter_calls,
            scatter,
            False,
            ds_logged=False,
        ),
    ]


# The settings zero_collectives takes from a layout under their own names (a Layout and a
# ParallelPlan name them alike).
_LAYOUT_AS_NAMED = (
    "grad_accum",
    "micro_batch",
    "hpz_partition_size",
    "quantized_weights",
    "quantized_gradients",
    "gather_with_grad",
)


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
        embed_dim=model.embed_dim,
        comm_dtype_bytes=comm_dtype_bytes,
        **{k: getattr(layout, k) for k in _LAYOUT_AS_NAMED},
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
