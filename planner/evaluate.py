"""The headline figures of many candidate plans at once (numpy arrays), computed by the very
functions `planner.estimate.estimate` uses for one plan, so both agree to the byte.

A vectorised search passes arrays (one element per candidate) for any plan or training setting;
`estimate()` passes Python scalars and reads the same terms. Sums run over the terms in one fixed
order in both cases (floating-point addition is not associative).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from planner import comm, compute, cost, data_pipeline, memory, ops
from planner import deepspeed_defaults as dsd
from planner.layout import Layout
from planner.offload import offload_term
from planner.params import count_params, param_tensors, zero3_residency
from planner.spec import HardwareSpec, ModelSpec, OfferingSpec, TrainingSpec
from planner.terms import Term, compose, sum_term
from planner.units import GIB

Num = Any


def ordered_sum(terms: dict[str, Num]) -> Num:
    return sum_term(terms).value


def compute_term(grad_accum: Num, microbatch_compute_s: Num) -> Term:
    return Term(
        "gas * microbatch_compute_s", {"gas": grad_accum, "microbatch_compute_s": microbatch_compute_s}
    )


def overhead_term(grad_accum: Num, microbatch_overhead_s: Num, step_overhead_s: Num) -> Term:
    return Term(
        "gas * microbatch_overhead_s + step_overhead_s",
        {
            "gas": grad_accum,
            "microbatch_overhead_s": microbatch_overhead_s,
            "step_overhead_s": step_overhead_s,
        },
    )


def step_term(
    compute_s: Num, overhead_s: Num, comm_exposed_s: Num, offload_s: Num, data_loading_s: Num
) -> Term:
    """Data loading is a floor under the step (it runs ahead in worker processes)."""
    return Term(
        "max(compute_s + overhead_s + comm_exposed_s + offload_s, data_loading_s)",
        {
            "compute_s": compute_s,
            "overhead_s": overhead_s,
            "comm_exposed_s": comm_exposed_s,
            "offload_s": offload_s,
            "data_loading_s": data_loading_s,
        },
    )


def runtime_reserved_term(memory_reserved_gib: float) -> Term:
    return Term("memory_reserved_gib * GiB", {"memory_reserved_gib": memory_reserved_gib, "GiB": GIB})


def gemm_efficiency_term(gemm_flops: Num, gemm_s: Num, peak_flops: Num) -> Term:
    """Executed GEMM FLOPs over GEMM time at peak: an output of the GEMM model."""
    return Term(
        "gemm_flops / (gemm_s * peak_flops)",
        {"gemm_flops": gemm_flops, "gemm_s": gemm_s, "peak_flops": peak_flops},
    )


def data_loading_term(
    micro_batch: Num, grad_accum: Num, loader_cores_per_gpu: Num, pipeline_per_core_s: Num
) -> Term:
    """One GPU's samples of a step over the host's decode-and-augment rate: a floor under the step."""
    return Term(
        "b * gas / (loader_cores_per_gpu * pipeline_per_core_s)",
        {
            "b": micro_batch,
            "gas": grad_accum,
            "loader_cores_per_gpu": loader_cores_per_gpu,
            "pipeline_per_core_s": pipeline_per_core_s,
        },
    )


def samples_per_s_term(global_batch: Num, step_s: Num) -> Term:
    return Term("B / step_s", {"B": global_batch, "step_s": step_s})


def mfu_term(
    model_flops_per_sample: Num, global_batch: Num, world: Num, step_s: Num, peak_flops: Num
) -> Term:
    """Model FLOPs per GPU per step over the step at peak (recomputation not counted: PaLM's MFU)."""
    return Term(
        "model_flops_per_sample * B / N / (step_s * peak_flops)",
        {
            "model_flops_per_sample": model_flops_per_sample,
            "B": global_batch,
            "N": world,
            "step_s": step_s,
            "peak_flops": peak_flops,
        },
    )


def activation_terms(
    model: ModelSpec,
    image_size: Num,
    patch_dropout: Num,
    grad_ckpt: Num,
    attention: str = "flash",
    stack: str = "eager",
) -> dict[str, Term]:
    """Activations per sample of both towers, the run's attention kernel in each (planner/memory.py),
    with the activation factor."""
    v, t = model.vision, model.text
    patches = np.floor_divide(image_size, v.patch_size) ** 2
    s_v = memory.vision_tokens(patches, patch_dropout)
    s_t = float(t.context_length)
    v_shape, t_shape = compute.vision_shape(model), compute.text_shape(model)
    v_extra = memory.vision_extra_bytes(image_size, patches, v.width, s_v)
    t_extra = memory.text_extra_bytes(t.context_length, t.width)
    v_attn = memory.attention_kernel_bytes(attention, stack, v_shape, s_v)
    t_attn = memory.attention_kernel_bytes(attention, stack, t_shape, s_t)
    k = memory.ACTIVATION_MEMORY_FACTOR
    return {
        "vision": memory.tower_activation_term(v_shape, s_v, grad_ckpt, v_attn, v_extra, k),
        "text": memory.tower_activation_term(t_shape, s_t, grad_ckpt, t_attn, t_extra, k),
    }


def gpu_memory_terms(
    model: ModelSpec, hardware: HardwareSpec, layout: Layout
) -> tuple[dict[str, Num], memory.ModelStates, dict[str, Num]]:
    """Per-GPU bytes by term (in the order they are summed), the model states, activations/sample
    (with the run's attention kernel and software stack, which set what attention keeps)."""
    lo = layout
    counts = count_params(model)
    res = zero3_residency(model, dsd.STAGE3_PARAM_PERSISTENCE_THRESHOLD, dsd.STAGE3_MAX_REUSE_DISTANCE)
    G = hardware.gpus_per_node
    ms = memory.zero_model_states(
        counts.total,
        counts.largest_layer,
        G,
        lo.nodes,
        lo.zero_stage,
        lo.offload_optimizer,
        lo.offload_param,
        lo.nvme_optimizer,
        lo.nvme_param,
    )
    act_terms = activation_terms(model, lo.image_size, lo.patch_dropout, lo.grad_ckpt, lo.attention, lo.stack)
    act = {k: t.value for k, t in act_terms.items()}
    buffers = memory.zero_buffer_bytes(counts.total, lo.zero_stage, lo.overlap_comm, res.persistent)
    activations = lo.micro_batch * (act["vision"] + act["text"])
    loss = memory.clip_loss_bytes(
        lo.micro_batch, lo.nodes * G, model.embed_dim, lo.local_loss, lo.gather_with_grad
    )
    terms = {
        "params_16bit": ms.params_16bit,
        "grads_16bit": ms.grads_16bit,
        "grads_fp32": memory.grads_fp32_at_peak(
            ms.grads_fp32, lo.zero_stage, ms.grads_16bit + buffers + activations + loss
        ),
        "master_params_fp32": ms.master_params_fp32,
        "optimizer_states_fp32": ms.optimizer_states_fp32,
        "zero3_largest_layer": ms.zero3_largest_layer,
        "deepspeed_estimator_margin": ms.estimator_margin,
        "zero_buffers": buffers,
        "hpz_secondary_shard": memory.hpz_secondary_bytes(counts.total, lo.hpz_partition_size),
        "activations_vision": lo.micro_batch * act["vision"],
        "activations_text": lo.micro_batch * act["text"],
        "clip_loss": loss,
        "runtime_reserved": runtime_reserved_term(hardware.memory_reserved_gib.value).value,
    }
    return terms, ms, act


def host_memory_terms(ms: memory.ModelStates, gpus_per_node: int) -> dict[str, Num]:
    return {
        "model_states": ms.host_per_node,
        "dataloader": memory.DATALOADER_HOST_GIB_PER_GPU * GIB * gpus_per_node,
    }


def _comm_s(model: ModelSpec, hardware: HardwareSpec, compute_s: Num, layout: Layout) -> tuple[Num, Num]:
    """Time of the step's collectives and the share that compute does not hide, per ZeRO stage."""
    lo = layout
    G = hardware.gpus_per_node
    stages = np.asarray(lo.zero_stage)
    total_s: Num = 0.0
    exposed_s: Num = 0.0
    # A set of plain ints, not np.unique: numpy's unique imports numpy.ma on first use (start-up time).
    for stage in sorted({int(s) for s in stages.ravel().tolist()}):
        colls = comm.model_collectives(model, G, stage, lo, comm.wire_bytes(lo.precision, lo.stack))
        ct = comm.exposed_comm_time_s(colls, hardware, compute_s, lo.overlap_comm)
        here = stages == stage
        total_s = np.where(here, ct.total_s, total_s)
        exposed_s = np.where(here, ct.exposed_s, exposed_s)
    return total_s, exposed_s


def step_overhead_term(model: ModelSpec, hardware: HardwareSpec, n: Num, layout: Layout) -> Term:
    """The optimizer step: a calibration's fitted time, else its memory-bound pass and DeepSpeed's wrapper."""
    lo = layout
    st_over = hardware.step_overhead_s
    if st_over is not None:
        return Term("calibrated_s", {"calibrated_s": st_over.value}, st_over.source)
    counts = count_params(model)
    bytes_per_param = ops.step_bytes_per_param(
        model.recipe.optimizer, model.recipe.grad_clip is not None, lo.precision, lo.stack, lo.optimizer_impl
    )
    optimizer = ops.optimizer_step_term(
        counts.total, n, lo.zero_stage, lo.offload_optimizer, hardware, bytes_per_param
    )
    tensors = param_tensors(model)
    wrapper = ops.deepspeed_wrapper_term(
        hardware, float(len(tensors)), float(counts.total), lo.zero_stage, lo.stack, lo.precision, n
    )
    loop = ops.torch_optimizer_loop_term(
        hardware,
        [float(t.numel) for t in tensors],
        bytes_per_param,
        lo.zero_stage,
        n,
        lo.stack,
        lo.precision,
        lo.optimizer_impl,
    )
    return compose("{optimizer} + {wrapper} + {loop}", optimizer=optimizer, wrapper=wrapper, loop=loop)


def microbatch_overhead_term(hardware: HardwareSpec) -> Term:
    """A calibration's fitted time per micro-batch, else none (launches are in microbatch_time)."""
    mb_over = hardware.microbatch_overhead_s
    if mb_over is not None:
        return Term("calibrated_s", {"calibrated_s": mb_over.value}, mb_over.source)
    return Term("0.0")


def step_terms(model: ModelSpec, hardware: HardwareSpec, layout: Layout) -> dict[str, Num]:
    """Step-time terms of each candidate (planner/ops.py prices every operation):

    compute_s = grad_accum × micro-batch time (GEMMs + attention + memory-bound work, or the host's
    kernel issue time when that is longer; a profile's `mfu_default` replaces it with FLOPs at a flat
    MFU); overhead_s = grad_accum × a calibrated per-micro-batch time + the optimizer step (optimizer,
    clipping, fp16 overflow check: bytes over HBM). step_s = max(compute_s + overhead_s +
    comm_exposed_s + offload_s, data_loading_s), data_loading_s from the host's decode-and-augment rate
    and `loader_workers` per GPU (planner/data_pipeline.py). Communication overlaps compute_s only."""
    lo = layout
    counts = count_params(model)
    G = hardware.gpus_per_node
    n = lo.nodes * G
    b, gas = lo.micro_batch, lo.grad_accum
    B = b * gas * n
    fwd = compute.forward_flops_per_sample(
        model, lo.image_size, lo.patch_dropout, B, np.where(lo.local_loss, 1.0, B / b)
    )
    tf = compute.train_flops_per_sample(fwd, lo.grad_ckpt)
    mb = ops.microbatch_time(
        model,
        hardware,
        micro_batch=b,
        image_size=lo.image_size,
        patch_dropout=lo.patch_dropout,
        grad_ckpt=lo.grad_ckpt,
        contrast_batch=B,
        loss_rows=np.where(lo.local_loss, b * 1.0, B * 1.0),
        stack=lo.stack,
        precision=lo.precision,
        attention=lo.attention,
        nograd_forwards=ops.nograd_forwards_per_microbatch(lo.stack, gas),
    )
    peak = ops.peak_tflops(hardware, lo.precision) * 1e12
    if hardware.mfu_default is not None:
        # A user's flat MFU replaces the per-operation model (the old behaviour, kept as an override).
        scale = ops.compute_scale_of(hardware)
        microbatch_compute_s = tf.hardware * b / (peak * hardware.mfu_default.value * scale)
    else:
        microbatch_compute_s = mb.total_s
    compute_s = compute_term(gas, microbatch_compute_s).value
    # Fixed times: a calibration's fitted figures, else none per micro-batch (launches are in
    # microbatch_time) and the optimizer's memory-bound pass per step.
    microbatch_over = microbatch_overhead_term(hardware)
    step_over = step_overhead_term(model, hardware, n, lo)
    microbatch_s, step_over_s = microbatch_over.value, step_over.value
    overhead_s = overhead_term(gas, microbatch_s, step_over_s).value
    total_s, exposed_s = _comm_s(model, hardware, compute_s, lo)
    offload = offload_term(
        counts.total,
        n,
        lo.nodes,
        gas,
        lo.offload_optimizer,
        lo.offload_param,
        lo.nvme_optimizer,
        lo.nvme_param,
        hardware.pcie_h2d_gbps.value,
        hardware.cpu_adam_gparams_per_s.value,
        hardware.nvme_write_gbps.value,
    )
    off = offload.value
    cores = data_pipeline.loader_cores_per_gpu(hardware, lo.loader_workers)
    loading_s = data_loading_term(b, gas, cores, data_pipeline.pipeline_per_core_s(hardware)).value
    step = step_term(compute_s, overhead_s, exposed_s, off, loading_s).value
    return {
        "compute_s": compute_s,
        "overhead_s": overhead_s,
        "comm_total_s": total_s,
        "comm_exposed_s": exposed_s,
        "offload_s": off,
        "step_s": step,
        "model_flops_per_sample": tf.model,
        "hardware_flops_per_sample": tf.hardware,
        "gemm_s": mb.gemm_s,
        "attention_s": mb.attention_s,
        "memory_bound_s": mb.memory_s,
        "device_s": mb.device_s,
        "kernels": mb.kernels,
        "host_s": mb.host_s,
        "microbatch_compute_s": microbatch_compute_s,
        "gemm_flops": mb.gemm_flops,
        "gemm_efficiency": gemm_efficiency_term(mb.gemm_flops, mb.gemm_s, peak).value,
        "microbatch_overhead_s": microbatch_s,
        "step_overhead_s": step_over_s,
        "data_loading_s": loading_s,
        # The terms behind the figures above that --explain prints.
        "terms": {
            **mb.terms,
            "microbatch_overhead": microbatch_over,
            "step_overhead": step_over,
            "offload": offload,
        },
    }


# Start-up and restarts without an offering: the bundled offerings' restart_s (an evaplan assumption).
RESTART_S_WITHOUT_OFFERING = 900.0


def restart_s_of(offering: OfferingSpec | None) -> float:
    """Start-up is priced like a restart (scheduling, image pull, rendezvous, model init): the
    offering's restart_s, else RESTART_S_WITHOUT_OFFERING."""
    return offering.restart_s.value if offering is not None else RESTART_S_WITHOUT_OFFERING


def training_wall(
    model: ModelSpec,
    hardware: HardwareSpec,
    training: TrainingSpec,
    offering: OfferingSpec | None,
    *,
    nodes: Num,
    global_batch: Num,
    step_s: Num,
    spot: Num,
) -> dict[str, Num]:
    """wall_of_run of a training on an offering (its restart time) at a spot reclaim rate: estimate()
    and the search (planner.vectorized) price runs through this one mapping."""
    return wall_of_run(
        model,
        hardware,
        nodes=nodes,
        samples=training.samples,
        global_batch=global_batch,
        step_s=step_s,
        restart_s=restart_s_of(offering),
        spot_interruptions_per_node_month=spot,
        checkpoint_every_s=training.checkpoint_every_s,
    )


def training_cost(
    model: ModelSpec,
    hardware: HardwareSpec,
    training: TrainingSpec,
    offering: OfferingSpec | None,
    run: dict[str, Num],
    *,
    nodes: Num,
    usd_per_node_hour: Num,
) -> dict[str, Num]:
    """cost_of_run of a training's run (training_wall) at one price, with the offering's storage."""
    return cost_of_run(
        model,
        hardware,
        run,
        nodes=nodes,
        usd_per_node_hour=usd_per_node_hour,
        storage_usd_per_gb_month=offering.storage_usd_per_gb_month.value if offering is not None else 0.0,
        checkpoints_kept=training.checkpoints_kept,
        dataset_tb=training.dataset_tb,
    )


def wall_of_run(
    model: ModelSpec,
    hardware: HardwareSpec,
    *,
    nodes: Num,
    samples: Num,
    global_batch: Num,
    step_s: Num,
    restart_s: float,
    spot_interruptions_per_node_month: Num = 0.0,
    checkpoint_every_s: Num | None = None,
) -> dict[str, Num]:
    """Wall time with checkpoint stalls and expected rework: it does not depend on the price, so
    offerings of one hardware with the same restart time and reclaim rate share it (planner.vectorized)."""
    psi = count_params(model).total
    write_s = cost.checkpoint_write_s(psi, nodes, hardware.nvme_write_gbps.value)
    rate = cost.interruption_rate_per_s(nodes, spot_interruptions_per_node_month)
    w = cost.wall_time(
        samples=samples,
        global_batch=global_batch,
        step_s=step_s,
        startup_s=restart_s,
        write_s=write_s,
        rate_per_s=rate,
        restart_s=restart_s,
        checkpoint_every_s=checkpoint_every_s,
    )
    return {"wall_s": w.wall_s, "write_s": write_s, "wall": w}


def cost_of_run(
    model: ModelSpec,
    hardware: HardwareSpec,
    run: dict[str, Num],
    *,
    nodes: Num,
    usd_per_node_hour: Num = 0.0,
    storage_usd_per_gb_month: float = 0.0,
    checkpoints_kept: Num = 3,
    dataset_tb: Num = 0.0,
) -> dict[str, Num]:
    """The cost of a run (wall_of_run): storage for the run's wall time and money at one price."""
    psi = count_params(model).total
    stor = cost.storage_usd(psi, checkpoints_kept, dataset_tb, run["wall_s"], storage_usd_per_gb_month)
    mo = cost.money(nodes, hardware.gpus_per_node, run["wall_s"], usd_per_node_hour, stor)
    return {**run, "money": mo}
