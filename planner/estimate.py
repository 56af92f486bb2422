"""`estimate()`: one model, one hardware profile, one plan → memory, communication, compute, time and
cost, term by term, with the derivation of every figure (for `evaplan estimate --explain`).

The arithmetic lives in params / memory / compute / comm / cost (array-friendly functions); this
module calls them with one plan's scalars and records each figure with its formula, inputs and
source. The result is a frozen, JSON round-trippable pydantic model that the renderer reads as
plan.json.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from planner import comm, compute, cost, data_pipeline, memory, ops, params
from planner import deepspeed_defaults as dsd
from planner import evaluate as ev
from planner.errors import InfeasibleError
from planner.layout import Layout
from planner.params import count_params, zero3_residency
from planner.prediction_range import PredictionRange
from planner.spec import HardwareSpec, ModelSpec, OfferingSpec, ParallelPlan, SourcedNonNegative, TrainingSpec
from planner.terms import Term, sum_term
from planner.units import GIB


class _Frozen(BaseModel):
    # Validators built on first use, as planner.spec.StrictModel's: a command that imports this
    # module but makes no estimate never builds them.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False, defer_build=True)


class Figure(_Frozen):
    """One derived number: what it is, how it was computed, from what, and on whose authority."""

    name: str
    value: float
    unit: str
    formula: str
    inputs: dict[str, float | str] = Field(default_factory=dict)
    source: str = ""


class ParamReport(_Frozen):
    vision: int
    text: int
    logit_scale: int
    total: int
    largest_layer: int
    largest_layer_module: str
    zero3_persistent: int
    zero3_gathered: int
    zero3_regathered_backward: int


class MemoryReport(_Frozen):
    """Bytes per GPU by term, their total against HBM, and host RAM / NVMe per node."""

    gpu_terms: dict[str, float]
    gpu_total_bytes: float
    model_states_bytes: float  # equals DeepSpeed's estimator for stages 2 and 3
    hbm_bytes: float
    gpu_headroom_bytes: float
    fits_gpu: bool
    host_terms: dict[str, float]
    host_per_node_bytes: float
    host_ram_bytes: float
    host_headroom_bytes: float
    fits_host: bool
    nvme_per_node_bytes: float
    activation_bytes_per_sample: dict[str, float]


class CollectiveReport(_Frozen):
    name: str
    op: str
    phase: str
    group_size: int
    calls: float
    message_bytes: float
    ring_bytes_per_gpu: float
    inter_node_bytes_per_gpu: float
    intra_node_bytes_per_gpu: float
    logged_bytes: float
    time_s: float
    overlappable: bool
    ds_logged: bool


class CommReport(_Frozen):
    collectives: list[CollectiveReport]
    message_bytes_per_gpu: float
    ring_bytes_per_gpu: float
    inter_node_bytes_per_gpu: float
    intra_node_bytes_per_gpu: float
    cluster_ring_bytes: float
    cluster_inter_node_bytes: float
    total_s: float
    overlappable_s: float
    exposed_s: float


class ComputeReport(_Frozen):
    forward_flops_per_sample: dict[str, float]
    model_flops_per_sample: float
    hardware_flops_per_sample: float
    compute_s: float
    overhead_s: float = 0.0  # grad_accum × micro-batch overhead + step overhead (absent in older plan.json)
    gemm_efficiency: float = 1.0  # executed GEMM FLOPs / (GEMM time × peak): an output
    # Per micro-batch on one GPU, by kind of work (planner/ops.py); 0 in plan.json of older versions.
    gemm_s: float = 0.0
    attention_s: float = 0.0
    memory_bound_s: float = 0.0
    host_s: float = 0.0
    data_loading_s: float = 0.0  # per step: the data-loading floor under step_s
    offload_s: float
    step_s: float
    samples_per_s: float
    mfu: float
    vision_tokens: float


class TimeReport(_Frozen):
    steps: float
    train_s: float
    startup_s: float
    checkpoint_bytes: float
    checkpoint_write_s: float
    checkpoint_interval_s: float
    checkpoints: float
    checkpoint_stall_s: float
    expected_interruptions: float
    rework_s: float
    wall_s: float


class PriceReport(_Frozen):
    pricing: str  # on_demand | spot | committed | on_prem
    usd_per_node_hour: float
    wall_s: float
    gpu_hours: float
    node_hours: float
    compute_usd: float
    storage_usd: float
    total_usd: float
    expected_interruptions: float
    source: str


class CostReport(_Frozen):
    gpu_hours: float
    node_hours: float
    prices: list[PriceReport]
    energy_kwh: float
    co2_kg: float


class Estimate(_Frozen):
    """Everything evaplan knows about one planned run."""

    model: str
    hardware: str
    offering: str | None
    plan: ParallelPlan
    training: TrainingSpec
    chosen: list[str] = Field(default_factory=list, description="settings evaplan chose (not given)")
    params: ParamReport
    memory: MemoryReport
    comm: CommReport
    compute: ComputeReport
    time: TimeReport
    cost: CostReport | None
    fits: bool
    verdict: str
    derivation: list[Figure]
    # Set by the CLI from the validation errors or the user's calibration (planner/intervals.py): data
    # handed in, so the estimate never imports the code that fits it.
    range: PredictionRange | None = None

    def figure(self, name: str) -> Figure:
        for f in self.derivation:
            if f.name == name:
                return f
        raise KeyError(name)


# ----------------------------------------------------------------------------------------- checks
def check_inputs(
    model: ModelSpec,
    hardware: HardwareSpec,
    plan: ParallelPlan,
    training: TrainingSpec,
    offering: OfferingSpec | None,
) -> None:
    """Inconsistent requests, each with the fix (InfeasibleError → exit 2)."""
    if plan.gpus_per_node != hardware.gpus_per_node:
        raise InfeasibleError(
            f"the plan has {plan.gpus_per_node} GPUs per node but {hardware.name} nodes have {hardware.gpus_per_node}",
            hint=f"use a multiple of {hardware.gpus_per_node} GPUs",
        )
    if offering is not None and offering.hardware != hardware.name:
        raise InfeasibleError(
            f"offering '{offering.name}' sells {offering.hardware}, not {hardware.name}",
            hint=f"pick an offering of {hardware.name} (`evaplan profiles list --kind offerings`)",
        )
    if plan.global_batch != training.global_batch:
        raise InfeasibleError(
            f"global batch {training.global_batch} is not reachable: micro-batch {plan.micro_batch} × "
            f"gradient accumulation {plan.grad_accum} × {plan.world_size} GPUs = {plan.global_batch}",
            hint="choose a global batch that is a multiple of the GPU count, or other --micro-batch/--grad-accum",
        )
    if training.image_size % model.vision.patch_size:
        raise InfeasibleError(
            f"image size {training.image_size} is not a multiple of the patch size {model.vision.patch_size}",
            hint=f"use a multiple of {model.vision.patch_size}",
        )
    if plan.precision == "fp32" or training.precision == "fp32":
        raise InfeasibleError(
            "fp32 training is not modelled (the memory model assumes 16-bit params with fp32 master weights)",
            hint="use --precision bf16 or fp16",
        )


# ----------------------------------------------------------------------------------------- memory
def memory_report(
    model: ModelSpec,
    hardware: HardwareSpec,
    plan: ParallelPlan,
    training: TrainingSpec,
    offering: OfferingSpec | None = None,
) -> MemoryReport:
    terms, ms, act = ev.gpu_memory_terms(model, hardware, Layout.of(plan, training))
    gpu_terms = {k: float(v) for k, v in terms.items()}
    gpu_total = float(ev.ordered_sum(terms))
    hbm = hardware.hbm_bytes
    host = ev.host_memory_terms(ms, plan.gpus_per_node)
    host_terms = {k: float(v) for k, v in host.items()}
    host_total = float(ev.ordered_sum(host))
    ram = (
        offering.host_ram_gib if offering is not None and offering.host_ram_gib else hardware.host_ram_gib
    ).value * GIB
    return MemoryReport(
        gpu_terms=gpu_terms,
        gpu_total_bytes=gpu_total,
        model_states_bytes=float(ms.gpu_total),
        hbm_bytes=hbm,
        gpu_headroom_bytes=hbm - gpu_total,
        fits_gpu=gpu_total <= hbm,
        host_terms=host_terms,
        host_per_node_bytes=host_total,
        host_ram_bytes=ram,
        host_headroom_bytes=ram - host_total,
        fits_host=host_total <= ram,
        nvme_per_node_bytes=float(ms.nvme_per_node),
        activation_bytes_per_sample={k: float(v) for k, v in act.items()},
    )


# ----------------------------------------------------------------------------------------- estimate
@dataclass(frozen=True)
class _Question:
    """What one estimate is asked about."""

    model: ModelSpec
    hardware: HardwareSpec
    plan: ParallelPlan
    training: TrainingSpec
    offering: OfferingSpec | None


class _Derivation:
    """The figures of one estimate, in the order `--explain` prints them."""

    def __init__(self) -> None:
        self.figs: list[Figure] = []

    def put(
        self, name: str, unit: str, t: Term, context: dict[str, Any] | None = None, source: str = ""
    ) -> float:
        """A figure from a term: its value, formula and inputs from one expression (+ context inputs
        the formula does not use, e.g. which kernel). Every figure is recorded here: none has a
        formula written beside its arithmetic."""
        context = context or {}
        if clash := set(context) & set(t.inputs):
            raise ValueError(f"{name}: context would hide the formula's inputs {sorted(clash)}")
        inputs = {**t.inputs, **context}
        v = float(t.value)
        self.figs.append(
            Figure(
                name=name,
                value=v,
                unit=unit,
                formula=t.formula,
                inputs={k: (float(x) if not isinstance(x, str) else x) for k, x in inputs.items()},
                source=source or t.source,
            )
        )
        return v


def _param_figures(d: _Derivation, q: _Question, counts: Any) -> None:
    """Parameter counts of both towers."""
    model = q.model
    arch = f"{model.name} profile ({model.config_source})"
    d.put("params.vision", "params", params.tower_params_term(model, "vision"), source=arch)
    d.put("params.text", "params", params.tower_params_term(model, "text"), source=arch)
    total = params.total_params_term(counts.vision, counts.text, counts.logit_scale)
    d.put("params.total", "params", total, source=arch)
    d.put(
        "params.largest_layer",
        "params",
        params.largest_layer_term(model),
        {"module": counts.largest_layer_module},
        "DeepSpeed 0.19.8 runtime/zero/stage3.py",
    )


def _memory_figures(d: _Derivation, q: _Question, counts: Any, res: Any) -> tuple[MemoryReport, float]:
    """Bytes per GPU by term, per node on the host; also the vision tokens per sample."""
    model, hardware, plan, training, offering = q.model, q.hardware, q.plan, q.training, q.offering
    n, b = plan.world_size, plan.micro_batch
    psi = counts.total
    mem = memory_report(model, hardware, plan, training, offering)
    src_ds = (
        "DeepSpeed 0.19.8 estimate_zero2_model_states_mem_needs / estimate_zero3_model_states_mem_needs"
        if plan.zero_stage >= 2
        else "DeepSpeed bookkeeping 2+2+4+4+8 bytes/param (no estimator for stage 0/1)"
    )
    k_repl, k_part = memory.estimator_bytes_per_param(
        plan.zero_stage, plan.offload_optimizer != "none", plan.offload_param != "none"
    )
    live = 4 * counts.largest_layer if plan.zero_stage == 3 else 0.0
    d.put(
        "memory.model_states",
        "B/GPU",
        memory.model_states_term(k_repl, k_part, float(psi), float(n), live),
        {
            "L": counts.largest_layer,
            "zero_stage": plan.zero_stage,
            "offload_optimizer": plan.offload_optimizer,
            "offload_param": plan.offload_param,
        },
        src_ds,
    )
    act = mem.activation_bytes_per_sample
    s_v = float(
        memory.vision_tokens((training.image_size // model.vision.patch_size) ** 2, training.patch_dropout)
    )
    _activation_figures(d, q)
    both = Term(
        "micro_batch * vision_per_sample + micro_batch * text_per_sample",
        {"micro_batch": b, "vision_per_sample": act["vision"], "text_per_sample": act["text"]},
    )
    d.put("memory.activations", "B/GPU", both)
    loss = memory.clip_loss_term(b, n, model.embed_dim, plan.local_loss, plan.gather_with_grad)
    d.put("memory.clip_loss", "B/GPU", loss, source="docs/planner-model.md §2 (CLIP loss)")
    buffers = memory.zero_buffers_term(psi, plan.zero_stage, plan.overlap_comm, res.persistent)
    d.put("memory.zero_buffers", "B/GPU", buffers, source="planner/deepspeed_defaults.py")
    reserved = ev.runtime_reserved_term(hardware.memory_reserved_gib.value)
    d.put("memory.runtime_reserved", "B/GPU", reserved, source=hardware.memory_reserved_gib.source)
    d.put("memory.gpu_total", "B/GPU", sum_term(mem.gpu_terms))
    headroom = Term("hbm - gpu_total", {"hbm": mem.hbm_bytes, "gpu_total": mem.gpu_total_bytes})
    d.put("memory.gpu_headroom", "B/GPU", headroom, source=hardware.hbm_gib.source)
    d.put(
        "memory.host_per_node",
        "B/node",
        sum_term(mem.host_terms),
        source="DeepSpeed estimators (cpu_mem ×1.5 buffer); DATALOADER_HOST_GIB_PER_GPU (evaplan assumption)",
    )
    return mem, s_v


def _activation_figures(d: _Derivation, q: _Question) -> None:
    """Activations per sample of each tower: what each layer keeps, and the attention kernel's share."""
    plan, training = q.plan, q.training
    terms = ev.activation_terms(
        q.model,
        training.image_size,
        training.patch_dropout,
        plan.grad_ckpt,
        training.attention,
        training.stack,
    )
    source = (
        "Korthikanti et al. arXiv 2205.05198 Table 2, recounted for EVA blocks (planner/memory.py); attention "
        "kept per layer by kernel and stack (planner/memory.py attention_kernel_bytes: PyTorch SDPA math / "
        "flash / memory-efficient saved tensors, measured in tests/evaclip/test_attention_memory.py); factor "
        "fitted on measured peaks (planner/validation.py, benchmarks/results/gpu_check-h100-deepspeed.log)"
    )
    context = {"attention": training.attention, "stack": training.stack}
    for tower, t in terms.items():
        d.put(f"memory.activations_{tower}_per_sample", "B", t, context, source)


def _flops_figures(d: _Derivation, q: _Question) -> tuple[Any, Any]:
    """FLOPs per sample: forward by tower and loss, training (model) and executed (hardware)."""
    model, plan, training = q.model, q.plan, q.training
    b, B = plan.micro_batch, plan.global_batch
    rows = 1.0 if plan.local_loss else B / b
    fwd = compute.forward_flops_per_sample(model, training.image_size, training.patch_dropout, B, rows)
    tf = compute.train_flops_per_sample(fwd, plan.grad_ckpt)
    terms = fwd.terms
    flop_src = "FlopCounterMode conventions (planner/compute.py)"
    d.put("compute.forward_flops_vision", "FLOP/sample", terms["vision"], source=flop_src)
    d.put("compute.forward_flops_text", "FLOP/sample", terms["text"], source="FlopCounterMode conventions")
    d.put("compute.forward_flops_loss", "FLOP/sample", terms["loss"])
    d.put(
        "compute.model_flops_per_sample",
        "FLOP/sample",
        compute.model_flops_term(fwd),
        source="docs/planner-model.md §3 (training ≈ 3× forward)",
    )
    d.put(
        "compute.hardware_flops_per_sample",
        "FLOP/sample",
        compute.hardware_flops_term(tf.model, fwd, plan.grad_ckpt),
        source="docs/planner-model.md §3 (≈ 4× with full recompute)",
    )
    return fwd, tf


def _operation_figures(d: _Derivation, q: _Question, s_v: float) -> tuple[dict[str, Any], float, float]:
    """The time of one micro-batch by operation class (GEMM, attention, memory-bound, host)."""
    model, hardware, plan, training = q.model, q.hardware, q.plan, q.training
    b = plan.micro_batch
    peak = ops.peak_tflops(hardware, training.precision) * 1e12
    st = ev.step_terms(model, hardware, Layout.of(plan, training))
    mm = hardware.matmul
    scale = ops.compute_scale_of(hardware)
    scale_src = (
        f"; compute_scale {scale:.4g}: {hardware.compute_scale.source}" if hardware.compute_scale else ""
    )
    rates = {
        "mamf_tflops": mm.tflops.value,
        "measured_shape": f"{mm.m}x{mm.n}x{mm.k}",
        "compute_units": mm.compute_units.value,
        "tile": f"{mm.tile_m}x{mm.tile_n}",
        "hbm_achieved_tbps": hardware.hbm_achieved_tbps.value,
        "compute_scale": scale,
    }
    terms = st["terms"]
    d.put(
        "compute.gemm_per_microbatch",
        "s",
        terms["gemm"],
        dict(
            rates,
            each_part="Σ over its Linear layers of passes·fwd + dgrad + wgrad GEMMs, each max(2MNK / rate(M,N,K), "
            "bytes / HBM); rate = MAMF × u(M,N,K) / u(measured shape), u = W/(W + units/2) · K/(K + k_overhead), "
            "W = M·N/tile · K/64",
            rows_vision=b * s_v,
            rows_text=b * model.text.context_length,
            precision=training.precision,
        ),
        f"{mm.tflops.source} ({mm.tflops.observed}); {mm.compute_units.source}; {mm.tile_source}{scale_src}",
    )
    gemm_eff = d.put(
        "compute.gemm_efficiency", "", ev.gemm_efficiency_term(st["gemm_flops"], st["gemm_s"], peak)
    )
    d.put(
        "compute.attention_per_microbatch",
        "s",
        terms["attention"],
        {
            "each_part": "layers × (passes·fwd + bwd), each max(FLOPs / measured kernel rate scaled to (s, d), "
            "Q/K/V/O bytes / HBM); bwd FLOPs 2.5× fwd (causal text: half)",
            "kernel": training.attention,
            "s_vision": s_v,
            "s_text": model.text.context_length,
            "flash_fwd_tflops": hardware.attention.flash_fwd_tflops.value,
            "measured_seq": hardware.attention.seq,
            "measured_head_dim": hardware.attention.head_dim,
            "bwd_over_fwd_rate": ops.FLASH_BWD_OVER_FWD,
        },
        f"{hardware.attention.flash_fwd_tflops.source} ({hardware.attention.flash_fwd_tflops.observed}); "
        "shape scaling and backward: FlashAttention-2, arXiv 2307.08691 (planner/ops.py)",
    )
    d.put(
        "compute.memory_bound_per_microbatch",
        "s",
        terms["memory_bound"],
        {
            "each_part": "bytes of norms, activations, residual adds, RoPE, layout copies, stems, patch-dropout "
            "gather and CLIP loss (fwd × passes + 2× backward)",
            "stack": training.stack,
            "hbm_achieved_tbps": hardware.hbm_achieved_tbps.value,
            "compute_scale": scale,
        },
        f"{hardware.hbm_achieved_tbps.source} ({hardware.hbm_achieved_tbps.observed})",
    )
    d.put(
        "compute.host_per_microbatch",
        "s",
        ops.host_term(st["kernels"], ops.HOST_S_PER_KERNEL[training.stack]),
        {"overlap": "GPU: overlaps device work; CPU: adds to it"},
        "planner/ops.py HOST_S_PER_KERNEL: eager 7 µs per torch call (github.com/flagos-ai/FlagGems/issues/4812, 2026-07-14) × 56/29 calls per kernel (evaclip census); compile 9.1 µs per Triton launch (github.com/meta-pytorch/tritonbench/pull/1017, 2026-04-14)",
    )
    return st, peak, gemm_eff


def _overhead_figures(d: _Derivation, q: _Question, st: dict[str, Any]) -> None:
    """Fixed times: per micro-batch and per optimizer step (calibrated, else modelled)."""
    model, hardware, training = q.model, q.hardware, q.training
    terms = st["terms"]
    # Each fixed time: its term, unit, calibrated value (None: modelled), and what the modelled one
    # counts and where it comes from (a calibrated one is shown as its term alone).
    overheads: tuple[tuple[str, str, SourcedNonNegative | None, dict[str, Any], str], ...] = (
        (
            "microbatch_overhead",
            "s/micro-batch",
            hardware.microbatch_overhead_s,
            {"why": "none beyond compute: kernel launches are priced in the micro-batch's host time"},
            "planner/ops.py",
        ),
        (
            "step_overhead",
            "s/step",
            hardware.step_overhead_s,
            {
                "what": "the optimizer's bytes/param over its partition (Ψ/N from ZeRO-1, 0 offloaded) / HBM "
                "+ DeepSpeed's per-tensor loops (eager) + a torch ≤ 1.13 single-tensor AdamW's host time under "
                "fp16 (amp)",
                "optimizer": model.recipe.optimizer,
                "optimizer_impl": ops.optimizer_impl_of(training.stack, training.optimizer_impl),
                "grad_clip": str(model.recipe.grad_clip is not None),
                "precision": training.precision,
            },
            f"optimizer memory-bound pass, DeepSpeed's loops and torch's AdamW counted by the op census, "
            f"GradScaler's wait before the step from torch/cuda/amp/grad_scaler.py (planner/ops.py); "
            f"{hardware.hbm_achieved_tbps.source}",
        ),
    )
    for term, unit, calibrated, context, source in overheads:
        if calibrated is not None:
            d.put(f"time.{term}", unit, terms[term])
        else:
            d.put(f"time.{term}", unit, terms[term], context, source)


def _step_time_figures(
    d: _Derivation, q: _Question, st: dict[str, Any], peak: float, psi: float
) -> tuple[float, float]:
    """Compute and fixed overheads of one step, and the data-loading floor."""
    hardware, plan, training = q.hardware, q.plan, q.training
    b, gas = plan.micro_batch, plan.grad_accum
    compute_s = float(st["compute_s"])
    if hardware.mfu_default is not None:
        d.put(
            "time.compute_per_step",
            "s",
            ev.compute_term(gas, st["microbatch_compute_s"]),
            {
                "microbatch_compute": "user override: hardware FLOPs × b / (peak × mfu_default)",
                "b": b,
                "peak_flops": peak,
                "mfu_default": hardware.mfu_default.value,
            },
            hardware.mfu_default.source,
        )
    else:
        d.put(
            "time.compute_per_step",
            "s",
            ev.compute_term(gas, st["microbatch_compute_s"]),
            {
                "microbatch_compute": "max(GEMM + attention + memory-bound, host) (CPU: their sum)",
                "device_s": st["device_s"],
                "host_s": st["host_s"],
            },
            "planner/ops.py",
        )
    _overhead_figures(d, q, st)
    cores = data_pipeline.loader_cores_per_gpu(hardware, training.loader_workers)
    d.put(
        "time.data_loading_per_step",
        "s",
        ev.data_loading_term(b, gas, cores, data_pipeline.pipeline_per_core_s(hardware)),
        {
            "loader_cores_per_gpu_from": "min(loader workers, host cores / GPUs per node)",
            "pipeline_per_core_s_from": "images/s per core = 1 / (1/decode + 1/random resized crop + 1/normalize)",
            "host_cpu_cores": hardware.host_cpu_cores.value,
            "loader_workers": training.loader_workers
            if training.loader_workers is not None
            else f"{data_pipeline.default_loader_workers(hardware)} (the default, what render gives each rank)",
            "image_decode_per_core_s": hardware.image_decode_per_core_s.value,
            "random_resized_crop_per_core_s": data_pipeline.RANDOM_RESIZED_CROP_PER_CORE_S,
            "normalize_per_core_s": data_pipeline.NORMALIZE_PER_CORE_S,
        },
        f"{hardware.image_decode_per_core_s.source}; {data_pipeline.PIPELINE_SOURCE}; "
        f"{hardware.host_cpu_cores.source}",
    )
    overhead = ev.overhead_term(gas, st["microbatch_overhead_s"], st["step_overhead_s"])
    overhead_s = d.put("time.overhead_per_step", "s", overhead)
    return compute_s, overhead_s


# The fields a report copies from the model's own objects, as plain floats (the model's figures may
# be numpy scalars): a collective's volumes (comm.Collective), the wall-time terms (cost.WallTime).
_COLLECTIVE_VOLUMES = (
    "calls",
    "message_bytes",
    "ring_bytes_per_gpu",
    "inter_node_bytes_per_gpu",
    "intra_node_bytes_per_gpu",
    "logged_bytes",
)
_WALL_TIMES = (
    "steps",
    "train_s",
    "startup_s",
    "checkpoint_interval_s",
    "checkpoints",
    "checkpoint_stall_s",
    "expected_interruptions",
    "rework_s",
    "wall_s",
)


def _floats(source: object, names: tuple[str, ...]) -> dict[str, float]:
    return {n: float(getattr(source, n)) for n in names}


def _comm_figures(d: _Derivation, q: _Question, st: dict[str, Any], compute_s: float) -> CommReport:
    """Collectives per step, their bytes and time, and the share compute does not hide."""
    model, hardware, plan, training = q.model, q.hardware, q.plan, q.training
    n = plan.world_size
    colls = comm.collective_bytes(model, plan, training.stack)
    creports = []
    for c in colls:
        creports.append(
            CollectiveReport(
                name=c.name,
                op=c.op,
                phase=c.phase,
                group_size=int(c.group_size),
                **_floats(c, _COLLECTIVE_VOLUMES),
                time_s=float(comm.collective_time_s(c, hardware)),
                overlappable=c.overlappable,
                ds_logged=c.ds_logged,
            )
        )
    ct = comm.exposed_comm_time_s(colls, hardware, compute_s, plan.overlap_comm)
    ring = sum(c.ring_bytes_per_gpu for c in creports)
    inter = sum(c.inter_node_bytes_per_gpu for c in creports)
    creport = CommReport(
        collectives=creports,
        message_bytes_per_gpu=sum(c.message_bytes for c in creports),
        ring_bytes_per_gpu=ring,
        inter_node_bytes_per_gpu=inter,
        intra_node_bytes_per_gpu=ring - inter,
        cluster_ring_bytes=ring * n,
        cluster_inter_node_bytes=inter * n,
        total_s=float(st["comm_total_s"]),
        overlappable_s=float(ct.overlappable_s),
        exposed_s=float(st["comm_exposed_s"]),
    )
    for c, r in zip(colls, creports, strict=True):
        d.put(
            f"comm.{r.name}",
            "B/GPU/step",
            c.size,
            {
                "calls": r.calls,
                "ring_bytes_per_gpu": r.ring_bytes_per_gpu,
                "group": r.group_size,
                "time_s": r.time_s,
            },
            "DeepSpeed 0.19.8 stage_1_and_2.py / stage3.py (planner/comm.py)",
        )
    d.put("comm.message_bytes_per_gpu", "B/GPU/step", sum_term({c.name: c.message_bytes for c in creports}))
    d.put(
        "comm.cluster_ring_bytes",
        "B/step",
        Term("N * ring_bytes_per_gpu", {"N": n, "ring_bytes_per_gpu": ring}),
    )
    exposed = comm.exposed_term(creport.total_s, creport.overlappable_s, compute_s, plan.overlap_comm)
    d.put("time.comm_exposed", "s", exposed, source="α-β ring; profile bus bandwidths")
    return creport


def _throughput_figures(
    d: _Derivation,
    q: _Question,
    fwd: Any,
    tf: Any,
    st: dict[str, Any],
    peak: float,
    gemm_eff: float,
    compute_s: float,
    overhead_s: float,
    creport: CommReport,
    s_v: float,
) -> ComputeReport:
    """Step time, samples/s and MFU."""
    plan = q.plan
    n, B = plan.world_size, plan.global_batch
    offload_s = d.put("time.offload_per_step", "s", st["terms"]["offload"])
    step = ev.step_term(compute_s, overhead_s, creport.exposed_s, offload_s, st["data_loading_s"])
    step_s = d.put("time.step", "s", step)
    sps = d.put("throughput.samples_per_s", "samples/s", ev.samples_per_s_term(B, step_s))
    achieved_mfu = d.put("throughput.mfu", "", ev.mfu_term(tf.model, B, n, step_s, peak))
    creport_compute = ComputeReport(
        forward_flops_per_sample={
            "vision": float(fwd.vision),
            "text": float(fwd.text),
            "loss": float(fwd.loss),
            "total": float(fwd.total),
        },
        model_flops_per_sample=float(tf.model),
        hardware_flops_per_sample=float(tf.hardware),
        compute_s=compute_s,
        overhead_s=overhead_s,
        gemm_efficiency=gemm_eff,
        gemm_s=float(st["gemm_s"]),
        attention_s=float(st["attention_s"]),
        memory_bound_s=float(st["memory_bound_s"]),
        host_s=float(st["host_s"]),
        data_loading_s=float(st["data_loading_s"]),
        offload_s=offload_s,
        step_s=step_s,
        samples_per_s=sps,
        mfu=achieved_mfu,
        vision_tokens=s_v,
    )
    return creport_compute


def _run_at(q: _Question, st: dict[str, Any], usd_per_node_hour: float, spot_rate: float) -> dict[str, Any]:
    """Wall time and money of the run at one price and spot reclaim rate."""
    plan, nodes = q.plan, q.plan.nodes
    wall = ev.training_wall(
        q.model,
        q.hardware,
        q.training,
        q.offering,
        nodes=nodes,
        global_batch=plan.global_batch,
        step_s=st["step_s"],
        spot=spot_rate,
    )
    return ev.training_cost(
        q.model, q.hardware, q.training, q.offering, wall, nodes=nodes, usd_per_node_hour=usd_per_node_hour
    )


def _wall_figures(
    d: _Derivation, q: _Question, st: dict[str, Any], psi: float
) -> tuple[TimeReport, cost.WallTime]:
    """Wall time with checkpoints and expected interruptions (on-demand hardware failures)."""
    hardware, training = q.hardware, q.training
    M, B = q.plan.nodes, q.plan.global_batch
    restart_s = startup_s = ev.restart_s_of(q.offering)
    base_run = _run_at(q, st, 0.0, 0.0)
    wt: cost.WallTime = base_run["wall"]
    write_s = float(base_run["write_s"])
    time_report = TimeReport(
        **_floats(wt, _WALL_TIMES),
        checkpoint_bytes=cost.CHECKPOINT_BYTES_PER_PARAM * psi,
        checkpoint_write_s=write_s,
    )
    d.put("time.steps", "steps", cost.steps_term(training.samples, B))
    write = cost.checkpoint_write_term(psi, M, hardware.nvme_write_gbps.value)
    d.put("time.checkpoint_write", "s", write, source=hardware.nvme_write_gbps.source)
    interval = cost.checkpoint_interval_term(
        write_s, wt.rate_per_s, st["step_s"], training.checkpoint_every_s
    )
    d.put(
        "time.checkpoint_interval",
        "s",
        interval,
        {"node_mtbf_h": cost.NODE_MTBF_H_ON_DEMAND},
        "Llama 3 arXiv 2407.21783 §3.3.4 (interruption rate)",
    )
    d.put(
        "time.wall",
        "s",
        cost.wall_term(
            startup_s, wt.train_s, wt.checkpoint_stall_s, wt.rate_per_s, wt.checkpoint_interval_s, restart_s
        ),
    )

    return time_report, wt


def _cost_figures(d: _Derivation, q: _Question, st: dict[str, Any], wt: cost.WallTime) -> CostReport | None:
    """Cost at each price the offering has; energy and CO2."""
    hardware, offering = q.hardware, q.offering
    n, M = q.plan.world_size, q.plan.nodes
    cost_report = None
    if offering is not None:
        prices: list[PriceReport] = []

        def price(pricing: str, usd: float, spot_rate: float, source: str) -> None:
            r = _run_at(q, st, usd, spot_rate)
            w, mo = r["wall"], r["money"]
            s_usd = float(mo.storage_usd)
            prices.append(
                PriceReport(
                    pricing=pricing,
                    usd_per_node_hour=usd,
                    wall_s=float(w.wall_s),
                    gpu_hours=float(mo.gpu_hours),
                    node_hours=float(mo.node_hours),
                    compute_usd=float(mo.compute_usd),
                    storage_usd=s_usd,
                    total_usd=float(mo.total_usd),
                    expected_interruptions=float(w.expected_interruptions),
                    source=source,
                )
            )
            d.put(f"cost.{pricing}", "USD", cost.money_term(mo.node_hours, usd, s_usd), source=source)

        if offering.on_demand_usd_per_node_hour is not None:
            p = offering.on_demand_usd_per_node_hour
            price("on_demand", p.value, 0.0, f"{p.source} ({p.observed})")
        if (
            offering.spot_usd_per_node_hour is not None
            and offering.spot_interruptions_per_node_month is not None
        ):
            p = offering.spot_usd_per_node_hour
            price(
                "spot",
                p.value,
                offering.spot_interruptions_per_node_month.value,
                f"{p.source} ({p.observed}); interruptions "
                f"{offering.spot_interruptions_per_node_month.value}/node-month",
            )
        if offering.committed_usd_per_node_hour is not None:
            p = offering.committed_usd_per_node_hour
            price("committed", p.value, 0.0, f"{p.source} ({p.observed}), {offering.committed_term}")
        if offering.on_prem is not None:
            usd = offering.on_prem.usd_per_node_hour(hardware.node_power_kw.value, offering.pue.value)
            price("on_prem", usd, 0.0, "capex/(years·8766·utilization) + opex + power·PUE")
        en = cost.energy(
            M, hardware.node_power_kw.value, wt.wall_s, offering.pue.value, offering.grid_gco2_per_kwh.value
        )
        kwh = cost.energy_kwh_term(M, hardware.node_power_kw.value, wt.wall_s, offering.pue.value)
        d.put("cost.energy_kwh", "kWh", kwh, source=hardware.node_power_kw.source)
        co2 = cost.co2_kg_term(en.kwh, offering.grid_gco2_per_kwh.value)
        d.put("cost.co2_kg", "kg CO2e", co2, source=offering.grid_gco2_per_kwh.source)
        cost_report = CostReport(
            gpu_hours=n * wt.wall_s / 3600.0,
            node_hours=M * wt.wall_s / 3600.0,
            prices=prices,
            energy_kwh=float(en.kwh),
            co2_kg=float(en.co2_kg),
        )
    return cost_report


def estimate(
    model: ModelSpec,
    hardware: HardwareSpec,
    plan: ParallelPlan,
    training: TrainingSpec,
    offering: OfferingSpec | None = None,
) -> Estimate:
    check_inputs(model, hardware, plan, training, offering)
    d, q = _Derivation(), _Question(model, hardware, plan, training, offering)
    counts = count_params(model)
    res = zero3_residency(model, dsd.STAGE3_PARAM_PERSISTENCE_THRESHOLD, dsd.STAGE3_MAX_REUSE_DISTANCE)
    _param_figures(d, q, counts)
    mem, s_v = _memory_figures(d, q, counts, res)
    fwd, tf = _flops_figures(d, q)
    st, peak, gemm_eff = _operation_figures(d, q, s_v)
    compute_s, overhead_s = _step_time_figures(d, q, st, peak, counts.total)
    creport = _comm_figures(d, q, st, compute_s)
    compute_report = _throughput_figures(
        d, q, fwd, tf, st, peak, gemm_eff, compute_s, overhead_s, creport, s_v
    )
    time_report, wall = _wall_figures(d, q, st, counts.total)
    cost_report = _cost_figures(d, q, st, wall)
    return Estimate(
        model=model.name,
        hardware=hardware.name,
        offering=offering.name if offering else None,
        plan=plan,
        training=training,
        params=ParamReport(
            **asdict(counts),  # ParamReport is params.py's ParamCounts and the ZeRO-3 residency
            zero3_persistent=res.persistent,
            zero3_gathered=res.gathered,
            zero3_regathered_backward=res.regathered_backward,
        ),
        memory=mem,
        comm=creport,
        compute=compute_report,
        time=time_report,
        cost=cost_report,
        fits=mem.fits_gpu and mem.fits_host,
        verdict=verdict_line(mem),
        derivation=d.figs,
    )


def verdict_line(mem: MemoryReport) -> str:
    gib = GIB
    if not mem.fits_gpu:
        big = max(mem.gpu_terms.items(), key=lambda kv: kv[1])
        return (
            f"does not fit: {mem.gpu_total_bytes / gib:.1f} GiB per GPU > {mem.hbm_bytes / gib:.0f} GiB HBM "
            f"(largest term {big[0]} {big[1] / gib:.1f} GiB)"
        )
    if not mem.fits_host:
        return (
            f"does not fit host RAM: {mem.host_per_node_bytes / gib:.0f} GiB per node > "
            f"{mem.host_ram_bytes / gib:.0f} GiB"
        )
    return (
        f"fits: {mem.gpu_total_bytes / gib:.1f} of {mem.hbm_bytes / gib:.0f} GiB per GPU "
        f"({mem.gpu_headroom_bytes / gib:.1f} GiB headroom); host {mem.host_per_node_bytes / gib:.0f} of "
        f"{mem.host_ram_bytes / gib:.0f} GiB per node"
    )
