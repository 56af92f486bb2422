"""Validated domain objects: what a model, a GPU node, a priced offering and a plan are.

Every profile model forbids unknown keys (a typo in a YAML file is an error, not a silently
ignored setting) and rejects NaN/inf. Every hardware and price figure is a `Sourced` value that
carries where it came from and when it was observed, so that any number the planner prints can
name its source (a document or URL a user can open; tests/test_profile_sources.py checks it).
"""

from __future__ import annotations

import math
from datetime import date
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from planner import deepspeed_defaults as dsd
from planner.limits import LIMITS
from planner.units import GIB

NAME_PATTERN = r"^[a-z0-9][a-z0-9-]*[a-z0-9]$"
Name = Annotated[str, Field(pattern=NAME_PATTERN, min_length=2, max_length=63)]


class StrictModel(BaseModel):
    """Base for every profile model: unknown keys, NaN and inf are errors.

    `defer_build`: a model's validator is built on its first use, not when its module is imported.
    A command pays only for the models it validates (`estimate` never validates a calibration, and
    the towers, recipe and prices are validated inside their profile's validator, never on their
    own). Measured for `evaplan estimate`: about 60 of 370 ms in-process (2-core machine under load,
    2026-11-30; benchmarks/estimate_speed.py times the whole command)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, frozen=True, defer_build=True)


# Upper bounds on profile figures, so that a user profile cannot make the planner allocate per-block
# tables without end or overflow a float or an integer (a vision depth of 10^11 crashed `estimate`;
# a width of 10^14 or an mlp_ratio of 10^300 overflowed): far above every published CLIP tower
# (EVA-CLIP-18B: 48 blocks of width 5120, head width 128, MLP ratio 8.57, arXiv 2402.04252 Table 1;
# EVA-CLIP-8B-448 448 px; text towers of 77 tokens and 49,408 BPE tokens, OpenCLIP model configs).
MAX_TOWER_DEPTH = 1_024
MAX_TOWER_WIDTH = 65_536
MAX_HEAD_WIDTH = 4_096
MAX_MLP_RATIO = 64.0
MAX_IMAGE_PX = int(LIMITS["image_size"][1])
MAX_CONTEXT_TOKENS = 65_536
MAX_VOCAB = 1 << 24
# 10^9: 2,800× the largest bundled figure (an on-premises node's capex, $350,000); 10^300 GiB of HBM
# or $/node-hour overflowed serve's replica count.
MAX_SOURCED_VALUE = 1e9


# --------------------------------------------------------------------------- sourced values
class Sourced(StrictModel):
    """A number with its provenance: `{value: 80, source: "NVIDIA H100 datasheet", observed: 2026-11-01}`."""

    value: float = Field(gt=0, le=MAX_SOURCED_VALUE)
    source: str = Field(min_length=3)
    observed: date
    note: str | None = None

    def __float__(self) -> float:
        return float(self.value)


class SourcedFraction(Sourced):
    """A sourced share in (0, 1]: an efficiency, a PUE-free ratio, a rate per month."""

    value: float = Field(gt=0, le=1)


class SourcedNonNegative(Sourced):
    """A sourced number that may be zero (a free egress, a zero-cost storage tier)."""

    value: float = Field(ge=0, le=MAX_SOURCED_VALUE)


# --------------------------------------------------------------------------- models
class _MlpHidden:
    """The MLP's hidden width of a tower (its `width` and `mlp_ratio` fields), one rule for both towers."""

    @property
    def mlp_hidden(self) -> int:
        # The official code takes int(width * mlp_ratio): 768 × 2.6667 → 2048, 1024 × 2.6667 → 2730.
        return int(self.width * self.mlp_ratio)  # type: ignore[attr-defined]


class VisionTower(_MlpHidden, StrictModel):
    """EVA ViT, in the terms of the official `vision_cfg` (the model JSONs of github.com/baaivision/EVA,
    EVA-CLIP; each bundled model profile names the one it was read from in `config_source`)."""

    image_size: int = Field(gt=0, le=MAX_IMAGE_PX, description="input resolution in pixels (square)")
    patch_size: int = Field(gt=0, le=MAX_IMAGE_PX)
    width: int = Field(gt=0, le=MAX_TOWER_WIDTH)
    depth: int = Field(gt=0, le=MAX_TOWER_DEPTH, description="number of transformer blocks (`layers`)")
    head_width: int = Field(gt=0, le=MAX_HEAD_WIDTH)
    mlp_ratio: float = Field(gt=0, le=MAX_MLP_RATIO)
    mlp: Literal["gelu", "swiglu"] = Field(description="`naiveswiglu: true` → swiglu")
    norm: Literal["layernorm", "rmsnorm"] = Field(description="`use_rms_norm: true` → rmsnorm")
    qkv_bias: bool = Field(description="q- and v-bias (no k-bias), as the official code")
    subln: bool = Field(description="extra norms before attn out-proj and MLP out-proj")
    rope: bool = Field(description="2-D rotary position embedding on patch tokens")
    postnorm: bool = Field(description="norm after each sub-layer instead of before")
    xattn: bool = Field(
        description="memory-efficient attention in the official run; only the default kernel of a published "
        "run that names none (the run's attention kernel sets memory and time)"
    )
    drop_path_rate: float = Field(ge=0, lt=1)
    norm_eps: float = Field(default=1e-6, gt=0)

    @property
    def heads(self) -> int:
        return self.width // self.head_width

    @property
    def grid(self) -> int:
        return self.image_size // self.patch_size

    @property
    def num_patches(self) -> int:
        return self.grid**2

    @property
    def seq_len(self) -> int:
        """Patch tokens plus one CLS token."""
        return self.num_patches + 1

    @model_validator(mode="after")
    def _check_shapes(self) -> VisionTower:
        if self.width % self.head_width:
            raise ValueError(
                f"width {self.width} is not divisible by head_width {self.head_width} "
                f"({self.width} / {self.head_width} = {self.width / self.head_width:.3f} heads)"
            )
        if self.image_size % self.patch_size:
            raise ValueError(f"image_size {self.image_size} is not divisible by patch_size {self.patch_size}")
        if self.rope and self.head_width % 4:
            raise ValueError(f"2-D RoPE needs head_width divisible by 4, got {self.head_width}")
        return self


class TextTower(_MlpHidden, StrictModel):
    """OpenCLIP causal text transformer, in the terms of the official `text_cfg`."""

    context_length: int = Field(gt=0, le=MAX_CONTEXT_TOKENS)
    vocab_size: int = Field(gt=0, le=MAX_VOCAB)
    width: int = Field(gt=0, le=MAX_TOWER_WIDTH)
    heads: int = Field(gt=0, le=MAX_TOWER_WIDTH)
    layers: int = Field(gt=0, le=MAX_TOWER_DEPTH)
    mlp_ratio: float = Field(default=4.0, gt=0, le=MAX_MLP_RATIO)
    xattn: bool = False
    norm_eps: float = Field(default=1e-5, gt=0)

    @property
    def head_width(self) -> int:
        return self.width // self.heads

    @model_validator(mode="after")
    def _check_heads(self) -> TextTower:
        if self.width % self.heads:
            raise ValueError(
                f"width {self.width} is not divisible by heads {self.heads} "
                f"({self.width} / {self.heads} = {self.width / self.heads:.3f})"
            )
        return self


# The optimizers a recipe steps (evaclip/optim.py builds both; DeepSpeed runs them fused on the GPU).
OptimizerName = Literal["lamb", "adamw"]


class Recipe(StrictModel):
    """The published training run of a model (profiles/published_runs.yaml, with each run's public source)."""

    samples_seen: float = Field(gt=0, le=LIMITS["samples"][1], description="total image-text pairs seen")
    global_batch: int = Field(gt=0, le=LIMITS["global_batch"][1])
    image_size: int = Field(gt=0, le=MAX_IMAGE_PX)
    patch_dropout: float = Field(ge=0, lt=1, description="share of patch tokens dropped")
    precision: Literal["bf16", "fp16", "fp32"]
    optimizer: OptimizerName
    betas: tuple[float, float] = (0.9, 0.98)
    eps: float = Field(default=1e-6, gt=0)
    weight_decay: float = Field(default=0.05, ge=0)
    image_lr: float = Field(gt=0)
    image_layer_decay: float = Field(gt=0, le=1)
    text_lr: float = Field(gt=0)
    text_layer_decay: float = Field(gt=0, le=1)
    warmup_steps: int = Field(ge=0)
    schedule: Literal["cosine"] = "cosine"
    grad_clip: float | None = Field(default=None, gt=0)
    zero_stage: int = Field(ge=0, le=3)
    grad_ckpt: bool
    flash_attn: bool = False
    reference_gpus: int = Field(gt=0, description="GPUs of the published run")
    reference_hardware: str = Field(min_length=2, description="e.g. A100-40GB")
    source: str = Field(min_length=3)


class Published(StrictModel):
    """Published totals and results, for sanity checks (not used in any formula)."""

    vision_params: float = Field(gt=0)
    total_params: float = Field(gt=0)
    imagenet_zero_shot_top1: float | None = Field(default=None, gt=0, le=100)
    source: str = Field(min_length=3)
    # Accuracy beside cost (`evaplan serve`): the 27-benchmark zero-shot average of arXiv 2402.04252,
    # and where both accuracy figures can be opened (URL and table).
    zero_shot_avg27_top1: float | None = Field(default=None, gt=0, le=100)
    accuracy_source: str | None = Field(default=None, min_length=3)


class ModelSpec(StrictModel):
    """One EVA-CLIP size: both towers, the joint embedding and the published recipe."""

    name: Name
    display_name: str
    config_source: str = Field(min_length=3, description="where the architecture comes from")
    embed_dim: int = Field(gt=0)
    vision: VisionTower
    text: TextTower
    recipe: Recipe
    published: Published | None = None
    debug: bool = Field(default=False, description="a tiny model for CPU tests")

    @property
    def official_attention(self) -> Literal["mem_efficient", "math"]:
        """The kernel of the official run by the vision tower's `xattn` (EVA-CLIP's xformers
        memory-efficient attention, else the math path): the default of a published run naming none."""
        return "mem_efficient" if self.vision.xattn else "math"

    def stepping(self, optimizer: OptimizerName) -> ModelSpec:
        """This model with its recipe stepping `optimizer`: what a run or measurement that swapped the
        recipe's optimizer is priced with (the optimizer step's bytes per parameter)."""
        if optimizer == self.recipe.optimizer:
            return self
        return self.model_copy(update={"recipe": self.recipe.model_copy(update={"optimizer": optimizer})})

    @model_validator(mode="after")
    def _check_recipe(self) -> ModelSpec:
        if self.recipe.image_size % self.vision.patch_size:
            raise ValueError(
                f"recipe.image_size {self.recipe.image_size} is not divisible by "
                f"vision.patch_size {self.vision.patch_size}"
            )
        return self


# --------------------------------------------------------------------------- hardware
class KubernetesLabels(StrictModel):
    """How a node with this GPU is found and scheduled: the device plugin's resource, the node label
    and value its GPU feature discovery sets, and the taint (docs/kubernetes.md)."""

    gpu_resource: str = Field(min_length=3, description="e.g. nvidia.com/gpu, amd.com/gpu")
    product_label: str = Field(min_length=3, description="node label key naming the GPU product")
    product: str = Field(min_length=1, description="that label's value")
    taint: str | None = Field(default=None, description="taint key to tolerate (NoSchedule)")


class CollectiveBandwidth(StrictModel):
    """Measured collective bus bandwidth (nccl-tests / rccl-tests busbw, large messages)."""

    intra_node_allreduce_gbps: Sourced = Field(description="GB/s busbw, all GPUs of one node")
    intra_node_allgather_gbps: Sourced = Field(description="GB/s busbw all-gather/reduce-scatter")
    inter_node_gbps: Sourced = Field(description="GB/s busbw per GPU across nodes (multi-node)")
    small_group_gbps: Sourced | None = Field(
        default=None, description="GB/s busbw for a 2-GPU group where it is much lower (MI300X)"
    )
    alpha_intra_us: Sourced = Field(description="per-step latency of an intra-node ring hop")
    alpha_inter_us: Sourced = Field(description="per-step latency of an inter-node ring hop")


class MatmulProfile(StrictModel):
    """The measured maximum achievable matmul rate (MAMF) and what the GEMM shape model needs to
    scale it to other shapes (planner/ops.py): the shape it was measured at, the SM/CU count the
    output tiles are spread over, and the output tile of the library's large GEMM kernels."""

    tflops: Sourced = Field(description="measured dense bf16 matmul TFLOP/s at the best shape")
    m: int = Field(gt=0, description="M of the measured shape")
    n: int = Field(gt=0, description="N of the measured shape")
    k: int = Field(gt=0, description="K of the measured shape")
    compute_units: Sourced = Field(description="SMs (NVIDIA) / CUs (AMD) / cores per rank (CPU)")
    tile_m: int = Field(gt=0, description="output tile rows of the large GEMM kernels")
    tile_n: int = Field(gt=0, description="output tile columns")
    k_overhead: int = Field(
        ge=0, description="per-tile prologue/epilogue cost in elements of K (pipeline fill)"
    )
    tile_source: str = Field(min_length=3)


class AttentionProfile(StrictModel):
    """Measured forward rates of the fused attention kernels at one shape (head dim, sequence length);
    planner/ops.py scales them to other shapes. Unmeasured kernels: cuDNN as flash, memory-efficient
    at half of flash (FlashAttention-2 paper)."""

    flash_fwd_tflops: Sourced = Field(description="FlashAttention-2 (flash-attn / SDPA flash) forward")
    seq: int = Field(gt=0, description="sequence length of the measurement")
    head_dim: int = Field(gt=0, description="head dimension of the measurement")
    cudnn_fwd_tflops: Sourced | None = None
    mem_efficient_fwd_tflops: Sourced | None = None


class HardwareSpec(StrictModel):
    """One accelerator in its usual node (8-GPU HGX / OAM baseboards, or a CPU host)."""

    name: Name
    display_name: str
    vendor: Literal["nvidia", "amd", "cpu"]
    collectives: Literal["nccl", "rccl", "gloo"]
    hbm_gib: Sourced = Field(description="device memory per GPU, GiB")
    hbm_tbps: Sourced = Field(description="device memory bandwidth, TB/s")
    bf16_dense_tflops: Sourced
    fp8_dense_tflops: Sourced | None = None
    tdp_w: Sourced
    gpus_per_node: int = Field(gt=0, le=64)
    intra_node_fabric: str = Field(min_length=2, description="NVLink4, xGMI, ...")
    intra_node_link_gbps: Sourced = Field(description="GB/s bidirectional scale-up per GPU")
    nics_per_node: int = Field(ge=0)
    nic_gbit: Sourced = Field(description="Gbit/s per NIC")
    collective: CollectiveBandwidth
    pcie_h2d_gbps: Sourced = Field(description="GB/s host↔device per GPU (offload)")
    host_ram_gib: Sourced = Field(description="host RAM per node, GiB")
    nvme_tb: Sourced = Field(description="local NVMe per node, TB")
    nvme_write_gbps: Sourced = Field(description="GB/s aggregate local NVMe write per node")
    cpu_adam_gparams_per_s: Sourced = Field(
        description="DeepSpeedCPUAdam throughput per node, billions of params per second"
    )
    node_power_kw: Sourced = Field(description="whole node at full load, incl. host")
    tf32_dense_tflops: Sourced | None = Field(default=None, description="dense TF32 peak (fp32 training)")
    matmul: MatmulProfile = Field(description="measured achievable GEMM rate and the shape model's inputs")
    attention: AttentionProfile = Field(description="measured fused-attention rates")
    hbm_achieved_tbps: Sourced = Field(description="HBM bandwidth memory-bound kernels reach, TB/s")
    host_cpu_cores: Sourced = Field(description="host CPU cores per node available to data loading")
    image_decode_per_core_s: Sourced = Field(
        description="images/s one host core decodes (JPEG) for the data-loading ceiling"
    )
    mfu_default: SourcedFraction | None = Field(
        default=None,
        exclude_if=lambda v: v is None,
        description="user override: a flat MFU replacing the per-operation compute model",
    )
    memory_reserved_gib: Sourced = Field(
        description="HBM taken by the runtime context and allocator fragmentation"
    )
    kubernetes: KubernetesLabels | None = None
    # Set by a calibration only (planner/calibration.py); unset, planner/compute.py derives them.
    microbatch_overhead_s: SourcedNonNegative | None = Field(
        default=None, exclude_if=lambda v: v is None, description="fixed time of every micro-batch, s"
    )
    step_overhead_s: SourcedNonNegative | None = Field(
        default=None, exclude_if=lambda v: v is None, description="fixed time of every optimizer step, s"
    )
    compute_scale: Sourced | None = Field(
        default=None,
        exclude_if=lambda v: v is None,
        description="calibrated multiplier on every modelled device rate (GEMM, attention, HBM)",
    )

    @property
    def hbm_bytes(self) -> float:
        return self.hbm_gib.value * GIB

    @model_validator(mode="after")
    def _measured_below_datasheet(self) -> HardwareSpec:
        # The speed model runs on measured rates; the datasheet figures bound them (a measured rate
        # above its datasheet peak is a typo or a sparse figure taken for a dense one).
        peak = self.bf16_dense_tflops.value
        checks = [
            ("matmul.tflops", self.matmul.tflops.value, "bf16_dense_tflops", peak),
            ("attention.flash_fwd_tflops", self.attention.flash_fwd_tflops.value, "bf16_dense_tflops", peak),
            ("hbm_achieved_tbps", self.hbm_achieved_tbps.value, "hbm_tbps", self.hbm_tbps.value),
        ]
        for name, value, bound_name, bound in checks:
            if value > bound * (1 + 1e-9):
                raise ValueError(f"{name} {value:g} is above {bound_name} {bound:g}")
        return self


# --------------------------------------------------------------------------- offerings
class OnPremCost(StrictModel):
    """Amortised capex + power, for an owned cluster."""

    capex_usd_per_node: Sourced
    amortization_years: float = Field(gt=0, le=10)
    utilization: float = Field(gt=0, le=1, description="share of hours the node does paid work")
    opex_usd_per_node_year: Sourced = Field(description="space, support, network")
    power_usd_per_kwh: Sourced

    def usd_per_node_hour(self, node_power_kw: float, pue: float) -> float:
        """capex / (years · 8766 h · utilization) + opex / (8766 · utilization) + power · PUE."""
        hours = self.amortization_years * 8766.0 * self.utilization
        capex = self.capex_usd_per_node.value / hours
        opex = self.opex_usd_per_node_year.value / (8766.0 * self.utilization)
        power = node_power_kw * pue * self.power_usd_per_kwh.value
        return capex + opex + power


class FabricSpec(StrictModel):
    """The network between nodes of an offering, and how a pod asks for it.

    `resource` is the Kubernetes extended resource its device plugin advertises (EFA:
    vpc.amazonaws.com/efa; RDMA NICs: rdma/... of the RDMA shared-device plugin); `per_node` how many
    of it one pod (one whole node) requests."""

    kind: Literal["efa", "infiniband", "roce", "tcp"]
    resource: str | None = None
    per_node: int = Field(default=1, ge=1, le=64)
    source: str = Field(min_length=3)
    observed: date


# The prices an offering can quote, in the order tables show them (on-demand first: every cloud has it).
PRICINGS: tuple[str, ...] = ("on_demand", "spot", "committed", "on_prem")


class OfferingSpec(StrictModel):
    """A priced node type: where the hardware is bought and what an hour of a node costs."""

    name: Name
    display_name: str
    provider: str = Field(min_length=2)
    kind: Literal["cloud", "on_prem"]
    hardware: Name
    gpus_per_node: int = Field(gt=0, le=64)
    instance_type: str | None = None
    on_demand_usd_per_node_hour: Sourced | None = None
    spot_usd_per_node_hour: Sourced | None = None
    committed_usd_per_node_hour: Sourced | None = None
    committed_term: str | None = Field(default=None, description="e.g. 1-yr, 3-yr")
    spot_interruptions_per_node_month: SourcedNonNegative | None = None
    on_prem: OnPremCost | None = None
    host_ram_gib: Sourced | None = Field(default=None, description="overrides the hardware's")
    nvme_tb: Sourced | None = None
    network_gbit: Sourced | None = None
    fabric: FabricSpec | None = Field(default=None, description="inter-node network and its device plugin")
    storage_usd_per_gb_month: SourcedNonNegative
    egress_usd_per_gb: SourcedNonNegative
    pue: Sourced = Field(description="power usage effectiveness, ≥ 1")
    grid_gco2_per_kwh: SourcedNonNegative
    restart_s: Sourced = Field(description="time to get a replacement node and restart the job")

    @model_validator(mode="after")
    def _check_prices(self) -> OfferingSpec:
        if self.kind == "cloud" and self.on_demand_usd_per_node_hour is None:
            raise ValueError("a cloud offering needs on_demand_usd_per_node_hour")
        if self.kind == "on_prem" and self.on_prem is None:
            raise ValueError("an on_prem offering needs an on_prem section (capex, power)")
        if self.spot_usd_per_node_hour is not None and self.spot_interruptions_per_node_month is None:
            raise ValueError("a spot price needs spot_interruptions_per_node_month")
        if self.committed_usd_per_node_hour is not None and not self.committed_term:
            raise ValueError("a committed price needs committed_term (e.g. 1-yr)")
        if self.pue.value < 1:
            raise ValueError(f"pue must be ≥ 1, got {self.pue.value}")
        return self


# --------------------------------------------------------------------------- plans
OffloadDevice = Literal["none", "cpu", "nvme"]
Precision = Literal["bf16", "fp16", "fp32"]


# The ParallelPlan fields a search varies, in the order the candidate table (planner/search.py) and
# the estimate's CSV rows (launcher/commands/estimate.py) show them.
SEARCHED_PLAN_FIELDS = (
    "nodes",
    "gpus_per_node",
    "zero_stage",
    "offload_optimizer",
    "offload_param",
    "hpz_partition_size",
    "grad_ckpt",
    "micro_batch",
    "grad_accum",
)


class ParallelPlan(StrictModel):
    """How a run is laid out: data parallelism with DeepSpeed ZeRO over `nodes × gpus_per_node`.

    EVA-CLIP is trained data-parallel only (no tensor or pipeline parallelism), so every GPU is
    a data-parallel rank and the global batch is micro_batch × grad_accum × world_size.
    Names follow DeepSpeed's config vocabulary where one exists.
    """

    nodes: int = Field(gt=0, le=4096)
    gpus_per_node: int = Field(gt=0, le=64)
    zero_stage: int = Field(ge=0, le=3)
    offload_optimizer: OffloadDevice = "none"
    offload_param: OffloadDevice = "none"
    micro_batch: int = Field(gt=0, description="train_micro_batch_size_per_gpu")
    grad_accum: int = Field(gt=0, description="gradient_accumulation_steps")
    grad_ckpt: bool = Field(description="activation checkpointing of every transformer block")
    precision: Precision = "bf16"
    overlap_comm: bool = dsd.OVERLAP_COMM
    hpz_partition_size: int = Field(default=1, ge=1, description="ZeRO++ zero_hpz_partition_size")
    quantized_weights: bool = Field(default=False, description="ZeRO++ zero_quantized_weights")
    quantized_gradients: bool = Field(default=False, description="ZeRO++ zero_quantized_gradients")
    local_loss: bool = True
    gather_with_grad: bool = True

    @property
    def world_size(self) -> int:
        return self.nodes * self.gpus_per_node

    @property
    def global_batch(self) -> int:
        return self.micro_batch * self.grad_accum * self.world_size

    # What a record of a run (a calibration run, a published run) keeps of its layout, in these names.
    RECORDED_LAYOUT: ClassVar[tuple[str, ...]] = ("zero_stage", "micro_batch", "grad_accum", "grad_ckpt")

    @classmethod
    def of_recorded(
        cls,
        run: Any,
        nodes: int,
        gpus_per_node: int,
        fields: tuple[str, ...] = RECORDED_LAYOUT,
        **settings: Any,
    ) -> ParallelPlan:
        """The plan of a recorded run on `nodes` × `gpus_per_node`: its layout `fields` (named as
        here), and `settings` besides."""
        layout = {k: getattr(run, k) for k in fields}
        return cls(nodes=nodes, gpus_per_node=gpus_per_node, **layout, **settings)

    @model_validator(mode="after")
    def _check_combination(self) -> ParallelPlan:
        if self.offload_param != "none" and self.zero_stage != 3:
            raise ValueError(
                f"offload_param={self.offload_param} needs zero_stage 3 (got {self.zero_stage}): "
                "DeepSpeed offloads parameters only in stage 3"
            )
        if self.offload_optimizer != "none" and self.zero_stage == 0:
            raise ValueError("offload_optimizer needs zero_stage 1, 2 or 3 (got 0)")
        if self.offload_optimizer == "nvme" and self.zero_stage != 3:
            raise ValueError(
                f"offload_optimizer=nvme needs zero_stage 3 (got {self.zero_stage}): "
                "DeepSpeed's NVMe offload (ZeRO-Infinity) is stage 3 only"
            )
        zeropp = self.hpz_partition_size > 1 or self.quantized_weights or self.quantized_gradients
        if zeropp and self.zero_stage != 3:
            raise ValueError(f"ZeRO++ options need zero_stage 3 (got {self.zero_stage})")
        if self.hpz_partition_size > 1 and self.world_size % self.hpz_partition_size:
            raise ValueError(
                f"hpz_partition_size {self.hpz_partition_size} does not divide the world size "
                f"{self.world_size} = {self.nodes} nodes × {self.gpus_per_node} GPUs"
            )
        return self


# The software stacks and attention kernels the time and memory models know (planner/ops.py prices
# each; planner/memory.py math_path names the unfused path a score-matrix kernel takes on a stack).
Stack = Literal["eager", "amp", "compile", "fused"]
AttentionKernel = Literal["flash", "cudnn", "mem_efficient", "math", "explicit"]
# How a plain-PyTorch trainer's torch.optim.AdamW runs (stack `amp`; planner/ops.py prices each): one
# fused kernel, torch ≥ 2.0's default on CUDA tensors (foreach: one pass per operation over all tensors),
# or torch ≤ 1.13's default (single_tensor: one pass per operation per tensor).
OptimizerImpl = Literal["fused", "foreach", "single_tensor"]


def optimizer_impl_unread(stack: str, impl: str | None) -> str | None:
    """Why a named AdamW implementation would not be read on this stack (None: it is, or none is
    named): only the amp stack runs torch's own AdamW; the others step their own fused optimizer
    (planner/ops.py optimizer_impl_of), which a report would then name instead of the one asked for."""
    if impl is None or stack == "amp":
        return None
    return f"stack {stack} steps its own fused optimizer"


class TrainingSpec(StrictModel):
    """What is to be trained: how many samples, at what batch and resolution."""

    samples: float = Field(gt=0, description="image-text pairs to see")
    global_batch: int = Field(gt=0)
    image_size: int = Field(gt=0)
    patch_dropout: float = Field(ge=0, lt=1)
    precision: Precision = "bf16"
    stack: Stack = Field(
        default="eager",
        description="software stack: eager PyTorch on 16-bit weights (the bundled DeepSpeed trainer), eager "
        "under torch.autocast with fp32 weights (OpenCLIP), torch.compile, or fused kernels (NeMo / "
        "Transformer Engine)",
    )
    attention: AttentionKernel = Field(
        default="flash",
        description="attention kernel (the bundled trainer: flash-attn or SDPA's flash; `explicit`: q @ kᵀ, "
        "softmax, @ v written out in the model's code)",
    )
    optimizer_impl: OptimizerImpl | None = Field(
        default=None,
        description="how the stack-`amp` trainer's torch AdamW runs: fused, foreach or single_tensor; None: "
        "foreach, torch ≥ 2.0's default (the other stacks step their own fused optimizers)",
    )
    loader_workers: int | None = Field(
        default=None,
        gt=0,
        description="DataLoader worker processes per GPU, what the rendered job runs; None: evaplan's default "
        "for the hardware (planner/data_pipeline.py default_loader_workers)",
    )
    checkpoint_every_s: float | None = Field(
        default=None, gt=0, description="checkpoint interval; None → Young/Daly optimum"
    )
    checkpoints_kept: int = Field(default=3, ge=1)
    dataset_tb: float = Field(default=0.0, ge=0, description="training data kept in object storage")

    @field_validator("samples")
    @classmethod
    def _finite(cls, v: float) -> float:
        if not math.isfinite(v):
            raise ValueError("samples must be finite")
        return v

    @model_validator(mode="after")
    def _optimizer_impl_on_amp(self) -> TrainingSpec:
        why = optimizer_impl_unread(self.stack, self.optimizer_impl)
        if why is not None:
            raise ValueError(f"optimizer_impl {self.optimizer_impl} applies to stack amp only ({why})")
        return self

    @classmethod
    def from_recipe(cls, recipe: Recipe, **overrides: Any) -> TrainingSpec:
        """The training of a model's published recipe (samples, batch, resolution, patch dropout),
        with any field replaced by `overrides`."""
        base = dict(
            samples=recipe.samples_seen,
            global_batch=recipe.global_batch,
            image_size=recipe.image_size,
            patch_dropout=recipe.patch_dropout,
        )
        return cls(**{**base, **overrides})
