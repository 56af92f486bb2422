"""What the renderer needs from a planned run (`PlanInputs`, from the planner's Estimate), and the
resources of a node's pod derived from it.

Sizing of a node's pod, each figure with its formula (`Sizing.explain()` prints them):
- GPUs: the plan's gpus_per_node of the hardware's Kubernetes resource (nvidia.com/gpu, amd.com/gpu).
- /dev/shm (emptyDir, medium Memory): 1 GiB per GPU for NCCL/RCCL shared-memory segments
  (SHM_COLLECTIVES_GIB_PER_GPU) plus the DataLoader's in-flight batches, which workers hand to the
  rank through shared memory: GPUs × num_workers × prefetch_factor 2 × micro-batch × bytes per
  sample (fp32 image 3·H·W·4 + int64 tokens context·8), doubled for headroom; whole GiB, rounded up.
- memory request = limit: the planner's host RAM per node (offloaded states, pinned buffers, data
  loading) plus /dev/shm, because tmpfs pages are charged to the pod's memory cgroup; whole GiB.
- CPU request = limit (Guaranteed QoS, so the kubelet's static CPU manager can pin cores): per GPU,
  one core for the rank, one for its NCCL/RCCL proxy and DataLoader main thread, one per data worker,
  plus CPU_ADAM_CORES_PER_GPU more when the optimizer steps on the host (DeepSpeedCPUAdam).
- terminationGracePeriodSeconds: the trainer checkpoints on SIGTERM, after finishing its current
  step. grace = ceil(2 × (ckpt_bytes_node / write_bw + [ckpt_bytes_node / s3_bw]) + step_s + 60 s),
  at least 120 s; ckpt_bytes_node is the most one node writes: ZeRO-3: 14Ψ·G/N; ZeRO-0/1/2: 2Ψ
  (rank 0's 16-bit module states) + 12Ψ·G/N (fp32 master + two moments, sharded), with Ψ the
  parameters, G GPUs per node, N GPUs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from launcher.render_options import RenderOptions
from planner.cost import CHECKPOINT_BYTES_PER_PARAM
from planner.errors import EvaplanError, InfeasibleError
from planner.estimate import Estimate
from planner.params import count_params
from planner.profiles import load_hardware, load_model, load_offering
from planner.spec import FabricSpec, HardwareSpec, ModelSpec, ParallelPlan, TrainingSpec
from planner.units import GIB

# Sizing constants (see the module docstring); all evaplan assumptions, overridable by flags.
SHM_COLLECTIVES_GIB_PER_GPU = 1.0  # NCCL/RCCL /dev/shm segments (proxy, SHM transport) per rank
DATALOADER_PREFETCH_FACTOR = 2  # torch.utils.data.DataLoader default prefetch_factor
SHM_HEADROOM = 2.0
CPU_ADAM_CORES_PER_GPU = 4  # DeepSpeedCPUAdam OpenMP threads per rank when the optimizer is offloaded
GRACE_SAFETY = 2.0
GRACE_MARGIN_S = 60  # SIGTERM handling, the barrier before saving, process exit
GRACE_MIN_S = 120
WEIGHT_BYTES_PER_PARAM = 2.0  # bf16/fp16 module states in a DeepSpeed checkpoint


@dataclass(frozen=True)
class PlanInputs:
    """What the renderer needs from a planned run; `inputs_from_estimate` builds it from the planner's Estimate."""

    model: ModelSpec
    hardware: HardwareSpec
    plan: ParallelPlan
    training: TrainingSpec
    estimate_json: dict[str, Any]  # plan.json: the Estimate this bundle came from
    host_ram_per_node_gib: float
    params: float  # Ψ, every parameter of both towers
    step_time_s: float | None = None
    checkpoint_every_s: float | None = None
    host_ram_available_gib: float | None = None  # the offering's or hardware's, for the fit check
    offering: str | None = None
    fabric: FabricSpec | None = None  # the offering's inter-node network (launcher/fabric.py)


def inputs_from_estimate(est: Estimate, user_dirs: Sequence[str | Path] | None = None) -> PlanInputs:
    """The renderer's inputs from the planner's Estimate (plan.json); profiles are loaded by name."""
    model = load_model(est.model, user_dirs)
    hardware = load_hardware(est.hardware, user_dirs)
    if count_params(model).total != est.params.total:
        raise EvaplanError(
            f"model profile '{est.model}' now has {count_params(model).total:,} parameters but the plan was "
            f"made for {est.params.total:,}",
            hint="re-run the estimate with the current profiles",
        )
    fabric = load_offering(est.offering, user_dirs).fabric if est.offering else None
    return PlanInputs(
        model=model,
        hardware=hardware,
        offering=est.offering,
        fabric=fabric,
        plan=est.plan,
        training=est.training,
        estimate_json=est.model_dump(mode="json"),
        host_ram_per_node_gib=est.memory.host_per_node_bytes / GIB,
        params=float(est.params.total),
        step_time_s=est.compute.step_s,
        checkpoint_every_s=est.time.checkpoint_interval_s,
        host_ram_available_gib=est.memory.host_ram_bytes / GIB,
    )


@dataclass(frozen=True)
class Sizing:
    """A node's pod resources, with the chain of arithmetic that produced each figure."""

    cpu: int
    memory_gib: int
    shm_gib: int
    termination_grace_period_s: int
    data_workers: int
    omp_threads: int
    lines: tuple[str, ...] = field(default=())

    def explain(self) -> list[str]:
        return list(self.lines)


def checkpoint_bytes_per_node(params: float, plan: ParallelPlan) -> float:
    """The most bytes one node writes for a checkpoint (see the module docstring).

    The planner's 14 bytes per parameter (planner.cost.CHECKPOINT_BYTES_PER_PARAM) split into the
    16-bit module states (2, written whole by rank 0 below ZeRO-3) and the fp32 master weights and
    two moments (12, sharded over the data-parallel ranks).
    """
    node_share = plan.gpus_per_node / plan.world_size
    optimizer = (CHECKPOINT_BYTES_PER_PARAM - WEIGHT_BYTES_PER_PARAM) * params * node_share
    weights = WEIGHT_BYTES_PER_PARAM * params * (node_share if plan.zero_stage == 3 else 1.0)
    return optimizer + weights


def size_pod(inputs: PlanInputs, opts: RenderOptions, data_workers: int) -> Sizing:
    plan, hw, model, training = inputs.plan, inputs.hardware, inputs.model, inputs.training
    g = plan.gpus_per_node
    lines: list[str] = []

    sample_bytes = 3 * training.image_size**2 * 4 + model.text.context_length * 8
    loader_bytes = g * data_workers * DATALOADER_PREFETCH_FACTOR * plan.micro_batch * sample_bytes
    shm_raw_gib = g * SHM_COLLECTIVES_GIB_PER_GPU + SHM_HEADROOM * loader_bytes / GIB
    shm_gib = max(1, math.ceil(shm_raw_gib))
    lines.append(
        f"/dev/shm {shm_gib}Gi = ceil({g} GPUs × {SHM_COLLECTIVES_GIB_PER_GPU:g} GiB collectives + "
        f"{SHM_HEADROOM:g} × {g} × {data_workers} workers × {DATALOADER_PREFETCH_FACTOR} prefetch × "
        f"{plan.micro_batch} micro-batch × {sample_bytes:,} B/sample)"
    )

    memory_gib = math.ceil(inputs.host_ram_per_node_gib + shm_gib)
    lines.append(
        f"memory {memory_gib}Gi = ceil({inputs.host_ram_per_node_gib:.1f} GiB planner host RAM per node "
        f"+ {shm_gib} GiB /dev/shm)"
    )
    if inputs.host_ram_available_gib is not None and memory_gib > inputs.host_ram_available_gib:
        raise InfeasibleError(
            f"a node's pod needs {memory_gib} GiB of host memory but nodes have "
            f"{inputs.host_ram_available_gib:g} GiB",
            hint="offload less (--offload-optimizer none), use more nodes, or a node type with more RAM",
        )

    offloaded = plan.offload_optimizer != "none"
    omp = CPU_ADAM_CORES_PER_GPU if offloaded else 1
    per_gpu = 2 + data_workers + (CPU_ADAM_CORES_PER_GPU if offloaded else 0)
    if opts.cpu_per_node is not None:
        cpu = opts.cpu_per_node
        lines.append(f"cpu {cpu} (--cpu-per-node)")
    else:
        cpu = g * per_gpu
        adam = f" + {CPU_ADAM_CORES_PER_GPU} CPU Adam" if offloaded else ""
        lines.append(f"cpu {cpu} = {g} GPUs × (1 rank + 1 proxy/loader + {data_workers} workers{adam})")

    ckpt = checkpoint_bytes_per_node(inputs.params, plan)
    write_gbps = opts.checkpoint_write_gbps or hw.nvme_write_gbps.value
    write_s = ckpt / (write_gbps * 1e9)
    upload_s = ckpt / (opts.s3_upload_gbps * 1e9) if opts.checkpoint_s3_uri else 0.0
    step_s = inputs.step_time_s or 0.0
    grace = max(GRACE_MIN_S, math.ceil(GRACE_SAFETY * (write_s + upload_s) + step_s + GRACE_MARGIN_S))
    upload = (
        f" + {upload_s:.1f} s S3 upload at {opts.s3_upload_gbps:g} GB/s" if opts.checkpoint_s3_uri else ""
    )
    lines.append(
        f"terminationGracePeriodSeconds {grace} = max({GRACE_MIN_S}, ceil({GRACE_SAFETY:g} × ({write_s:.1f} s write "
        f"of {ckpt / 1e9:.1f} GB at {write_gbps:g} GB/s{upload}) + {step_s:.1f} s step + {GRACE_MARGIN_S} s))"
    )
    return Sizing(
        cpu=cpu,
        memory_gib=memory_gib,
        shm_gib=shm_gib,
        termination_grace_period_s=grace,
        data_workers=data_workers,
        omp_threads=omp,
        lines=tuple(lines),
    )
