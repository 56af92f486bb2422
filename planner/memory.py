"""Memory per GPU and per host for data-parallel DeepSpeed ZeRO training of an EVA-CLIP model.

Every function is plain arithmetic that works on Python numbers and on numpy arrays alike
(broadcasting; `np.where` instead of `if`), so that a vectorised search over many candidate plans
and the scalar `planner.estimate.estimate` compute the very same bytes.

Sources (docs/planner-model.md has the derivations):
- Model states: DeepSpeed 0.19.8 `estimate_zero2_model_states_mem_needs` (stage_1_and_2.py) and
  `estimate_zero3_model_states_mem_needs` (stage3.py) — reproduced to the byte, including their
  `int()` truncation and their 1.5 host buffer factor; ZeRO-0/1 follow the same per-parameter
  bookkeeping (DeepSpeed keeps fp32 gradients: 2 + 2 + 4 + 4 + 8 bytes per parameter).
- Activations: Korthikanti et al., arXiv 2205.05198 §4 (34·s·b·h + 5·a·s²·b bytes per layer), recounted
  tensor by tensor for EVA's blocks (no dropout, GELU or SwiGLU MLP, sub-LN, RoPE).
- Buffers: planner/deepspeed_defaults.py (the values evaplan renders into the DeepSpeed config).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from planner import deepspeed_defaults as dsd
from planner.terms import Term

Num = Any  # a float or a numpy array of floats (one value per candidate plan)

# DeepSpeed's estimators multiply host memory by this "additional_buffer_factor" (default 1.5).
DS_HOST_BUFFER_FACTOR = 1.5
BYTES_16BIT = 2
BYTES_FP32 = 4
# Host RAM for data loading per GPU: decode workers, WebDataset shuffle buffer and pinned batches.
# evaplan assumption (open_clip/EVA use 8-10 workers per GPU, each holding ~0.5-1 GiB of decoded
# shards and a 1000-sample shuffle buffer); calibrate with `evaplan calibrate`.
DATALOADER_HOST_GIB_PER_GPU = 8.0
# Pinned host swap buffers for NVMe offload per GPU: DeepSpeed's offload_param default
# buffer_count 5 × buffer_size 1e8 elements × 2 bytes (runtime/zero/offload_config.py), plus
# the same again for the optimizer's swap pipeline (evaplan assumption).
NVME_SWAP_BUFFER_BYTES_PER_GPU = 2 * 5 * 1e8 * BYTES_16BIT


# Measured activation memory over the memory model's (Korthikanti-style tensor count, planner/memory.py),
# fitted by planner/validation.py (`fit_activation_factor`) on the fit half of the bundled runs with a
# measured peak (profiles/published_runs.yaml: benchmarks/results/gpu_check-h100-deepspeed.log,
# torch.cuda.max_memory_allocated of evaplan's trainer on one H100); the held-out run is reported by
# `evaplan validate`, and tests/planner/test_validation.py fails when this constant and the fit part.
# The tensor count keeps every saved tensor alive at once; PyTorch frees some (and views share storage).
ACTIVATION_MEMORY_FACTOR = 0.939


def _f(x: Num) -> Num:
    return np.asarray(x, dtype=np.float64) if isinstance(x, np.ndarray) else float(x)


# ------------------------------------------------------------------------------------- model states
@dataclass(frozen=True)
class ModelStates:
    """Bytes of model states per GPU (by term) and per node of host RAM / NVMe."""

    params_16bit: Num
    grads_16bit: Num
    grads_fp32: Num
    master_params_fp32: Num
    optimizer_states_fp32: Num
    zero3_largest_layer: Num  # DeepSpeed's 4 × largest_layer_params (gathered 16-bit params + grads)
    estimator_margin: Num  # DeepSpeed's total minus the terms above (stage 3: 2Ψ/N, plus int() rounding)
    gpu_total: Num  # what DeepSpeed's estimator returns (int-truncated like it)
    host_per_node: Num  # DeepSpeed's cpu_mem (with its 1.5 buffer factor)
    nvme_per_node: Num


def zero_model_states(
    psi: Num,
    largest_layer: Num,
    gpus_per_node: Num,
    nodes: Num,
    zero_stage: Num,
    offload_optimizer: Num,
    offload_param: Num,
    nvme_optimizer: Num = False,
    nvme_param: Num = False,
) -> ModelStates:
    """Model-state bytes for ZeRO stage 0..3 with optional optimizer/param offload.

    psi: parameter count Ψ; largest_layer: DeepSpeed's largest_layer_params; offload_* are truthy when
    offloaded to cpu or nvme; nvme_* say the offload target is NVMe (then host RAM holds only buffers).
    For stages 2 and 3 `gpu_total` and `host_per_node` equal DeepSpeed's estimators exactly
    (zero_init=True for stage 3, the way evaplan's trainer builds the model).
    """
    psi, L = _f(psi), _f(largest_layer)
    G, M = _f(gpus_per_node), _f(nodes)
    n = G * M
    stage = np.asarray(zero_stage)
    off_o = np.asarray(offload_optimizer, dtype=bool)
    off_p = np.asarray(offload_param, dtype=bool) & (stage == 3)
    s3, s2, s1 = stage == 3, stage == 2, stage == 1
    s0 = stage == 0
    off_o = off_o & ~s0

    # Bytes per parameter that each term costs, and whether the term is partitioned over n GPUs.
    def share(bytes_per_param: float, partitioned: Any) -> Num:
        return np.where(partitioned, bytes_per_param * psi / n, bytes_per_param * psi)

    params_16 = np.where(off_p, 0.0, share(2, s3))
    grads_16 = np.where(off_o & (s2 | s3), 0.0, share(2, s2 | s3))
    # ZeRO-3 converts 16-bit gradient partitions to fp32 one sub-group at a time inside step(), so no
    # persistent fp32 gradient buffer; DeepSpeed's estimator still budgets 18 bytes/param (see
    # `estimator_margin` below).
    grads_32 = np.where(off_o | s3, 0.0, share(4, ~s0))
    master_32 = np.where(off_o, 0.0, share(4, ~s0))
    optim_32 = np.where(off_o, 0.0, share(8, ~s0))
    live = np.where(s3, 4 * L, 0.0)

    k_repl, k_part = estimator_bytes_per_param(zero_stage, offload_optimizer, offload_param)
    gpu_total = model_states_term(k_repl, k_part, psi, n, live).value

    f = DS_HOST_BUFFER_FACTOR
    gpus_factor = 1 / M
    host_z2 = np.where(off_o, psi * np.maximum(4 * n, 16) * f, psi * 4 * G * f)
    host_z3 = np.where(
        off_o,
        np.where(off_p, psi * 18 * gpus_factor * f, psi * 16 * gpus_factor * f),
        np.where(off_p, psi * 2 * gpus_factor * f + L * 4 * G * f, L * 4 * G * f),
    )
    # Stages 0/1 hold the fp32 model on the host at load time like stage 2 without offload.
    host = np.floor(np.where(s3, host_z3, np.where(s2 | s1, host_z2, psi * 4 * G * f)))
    # NVMe targets (ZeRO-Infinity, stage 3): the offloaded states live on the node's drives and host
    # RAM keeps pinned swap buffers instead of them.
    nvme_o = np.asarray(nvme_optimizer, dtype=bool) & off_o & s3
    nvme_p = np.asarray(nvme_param, dtype=bool) & off_p
    nvme = np.where(nvme_o, 16 * psi / M, 0.0) + np.where(nvme_p, 2 * psi / M, 0.0)
    swap = np.where(nvme_o | nvme_p, NVME_SWAP_BUFFER_BYTES_PER_GPU * G, 0.0)
    host = (
        host
        - np.where(nvme_o, 16 * psi * gpus_factor * f, 0.0)
        - np.where(nvme_p, 2 * psi * gpus_factor * f, 0.0)
    )
    host = host + swap
    margin = gpu_total - (params_16 + grads_16 + grads_32 + master_32 + optim_32 + live)
    return ModelStates(
        params_16, grads_16, grads_32, master_32, optim_32, live, margin, gpu_total, host, nvme
    )


def estimator_bytes_per_param(zero_stage: Num, offload_optimizer: Num, offload_param: Num) -> tuple[Num, Num]:
    """DeepSpeed's estimator coefficients: bytes per parameter kept whole on each GPU, and bytes per
    parameter partitioned over the N GPUs (estimate_zero{2,3}_model_states_mem_needs; stages 0/1 by
    the same bookkeeping: 2+2+4+4+8 bytes/param)."""
    stage = np.asarray(zero_stage)
    s3, s2, s1 = stage == 3, stage == 2, stage == 1
    off_o = np.asarray(offload_optimizer, dtype=bool) & ~(stage == 0)
    off_p = np.asarray(offload_param, dtype=bool) & s3
    k_part = np.where(
        s3,
        np.where(off_o, np.where(off_p, 0, 2), np.where(off_p, 16, 18)),
        np.where(s2, np.where(off_o, 0, 18), np.where(s1, np.where(off_o, 0, 16), 0)),
    )
    k_repl = np.where(s3, 0, np.where(s2, 2, np.where(s1, 4, 20)))
    return k_repl, k_part


def model_states_term(k_replicated: Num, k_partitioned: Num, psi: Num, world: Num, live: Num) -> Term:
    """The model states as DeepSpeed's estimator totals them: the partitioned part is int(k · Ψ / N)
    in one go; live: ZeRO-3's 4 × largest layer (its gathered 16-bit params and grads)."""
    return Term(
        "k_replicated * psi + floor(k_partitioned * psi / N) + live",
        {"k_replicated": k_replicated, "k_partitioned": k_partitioned, "psi": psi, "N": world, "live": live},
    )


def grads_fp32_at_peak(grads_fp32: Num, zero_stage: Num, backward_live: Num) -> Num:
    """The fp32 gradient partition's share of the per-GPU peak.

    ZeRO-1/2 (DeepSpeed 0.19.8 stage_1_and_2.py) create the fp32 gradient partition (4Ψ/N) inside the
    optimizer step, after the 16-bit gradients, reduce buckets and activations of backward are freed,
    and drop it after the step. Measured on 2 and 4 CPU ranks (benchmarks/zero_buffers_cpu.py, eva-clip-debug):
    2 + 12/N bytes/param after the step, + 4/N inside the step, + 2 (16-bit gradients) + buckets in
    backward. The peak is then max(backward, step): the partition adds only what it exceeds of the
    backward-only bytes (`backward_live`: 16-bit gradients + buckets + activations + loss). ZeRO-0
    (DeepSpeed's BF16/FP16 optimizers keep fp32 gradients across steps) keeps it; ZeRO-3 has none.
    """
    stage = np.asarray(zero_stage)
    transient = (stage == 1) | (stage == 2)
    return np.where(transient, np.maximum(0.0, grads_fp32 - backward_live), grads_fp32)


# ------------------------------------------------------------------------------------- activations
@dataclass(frozen=True)
class TowerShape:
    """What the activation and FLOP formulas need to know about one transformer tower."""

    layers: int
    width: int
    heads: int
    mlp_hidden: int
    swiglu: bool
    subln: bool
    rope: bool


def layer_bytes_per_token(t: TowerShape) -> float:
    """16-bit bytes one block keeps for backward per token, without recompute and with
    memory-efficient attention (no s² term). Korthikanti's 34·h per token minus the two dropout
    masks (EVA trains without dropout), tensor by tensor:

    attention: norm input 2h + qkv-proj input 2h + q, k, v 6h + attention output (proj input) 2h;
      + RoPE-rotated q, k 4h; + sub-LN output 2h.
    MLP: norm input 2h + fc1 input 2h; GELU: GELU input 2f + fc2 input 2f;
      SwiGLU: w1 out 2f, silu out 2f, w2 out 2f, product 2f; + sub-LN output 2f.
    """
    h, f = t.width, t.mlp_hidden
    attn = 12 * h + (4 * h if t.rope else 0) + (2 * h if t.subln else 0)
    mlp = 4 * h + (8 * f if t.swiglu else 4 * f) + (2 * f if t.subln else 0)
    return float(attn + mlp)


# What the attention kernel itself keeps for backward, per layer and sample, beyond the 16-bit q, k, v
# that layer_bytes_per_token counts (docs/planner-model.md, "Attention memory by kernel").
# Fused kernels (FlashAttention-2, cuDNN, memory-efficient) keep their output and one fp32 log-sum-exp
# per query row and head (PyTorch aten/src/ATen/native/transformers/attention.cpp: `logsumexp` of shape
# (batch, heads, seq); the memory-efficient kernel pads it to a multiple of 32 rows, kAlignLSE = 32 in
# aten/src/ATen/native/transformers/cuda/attention.cu) and recompute the scores in backward.
LSE_BYTES = 4.0
MEM_EFFICIENT_LSE_ALIGN = 32.0
# Two kernels materialise the batch × heads × s × s score matrix: `math`, PyTorch SDPA's math backend
# (F.scaled_dot_product_attention), and `explicit`, attention written out in the model's code as
# q @ kᵀ · scale, softmax, @ v (timm's Attention before 0.9, ViT-pytorch, Hugging Face models before
# SDPA). Which unfused path runs depends on the kernel and the stack (math_path):
# - "sdpa_math" (math on eager / compile): PyTorch ≥ 2.5 SDPA math upcasts 16-bit q, k, v to fp32
#   (`_scaled_dot_product_attention_math`, unless allow_fp16_bf16_reduction_math_sdp);
# - "autocast" (math or explicit under amp): OpenCLIP's nn.MultiheadAttention math under torch.autocast
#   (PyTorch 1.x F.multi_head_attention_forward: bmm → softmax → bmm), and any written-out attention
#   there: autocast's op list runs softmax in fp32 whoever calls it;
# - "fused_softmax" (either on the fused stack): Megatron/NeMo FusedScaleMaskSoftmax, one 16-bit kernel;
# - "explicit_16bit" (explicit on eager / compile): every op in the model's 16-bit dtype (a `.half()`
#   model): the GEMM writes 16-bit scores, the scale multiply and the softmax read and write 16 bits.
SCORE_MATRIX_KERNELS: tuple[str, ...] = ("math", "explicit")
MATH_PATHS = {
    ("math", "eager"): "sdpa_math",
    ("math", "compile"): "sdpa_math",
    ("math", "amp"): "autocast",
    ("math", "fused"): "fused_softmax",
    ("explicit", "eager"): "explicit_16bit",
    ("explicit", "compile"): "explicit_16bit",
    ("explicit", "amp"): "autocast",
    ("explicit", "fused"): "fused_softmax",
}


def math_path(kernel: str, stack: str) -> str:
    """The unfused attention path a score-matrix kernel (`math`, `explicit`) takes on `stack`."""
    try:
        return MATH_PATHS[(kernel, stack)]
    except KeyError:
        raise ValueError(f"no score-matrix attention path for kernel {kernel!r} on stack {stack!r}") from None


# Each path keeps the softmax output for backward, one value per score, in the dtype it computes the
# softmax in:
# - sdpa_math: the fp32 probabilities, 4 bytes, and fp32 copies of q·√scale, k·√scale and v (12h per
#   token) in place of the 16-bit q, k, v (6h) — measured with saved_tensors_hooks on evaclip's attention
#   (tests/evaclip/test_attention_memory.py);
# - autocast: softmax in fp32 (4 bytes kept by softmax's backward) and its output cast to fp16 for the
#   AV bmm (2 bytes kept by the bmm): 6;
# - fused_softmax: 16-bit in and out, kept once for softmax and AV: 2;
# - explicit_16bit: the 16-bit probabilities, kept once for softmax's backward and the AV matmul (the
#   scale multiply by a Python float keeps nothing): 2.
# With attention dropout (Korthikanti et al. arXiv 2205.05198: + a 1-byte mask and the 2-byte dropped
# output) more; EVA-CLIP and OpenCLIP train with attention dropout 0, so no bundled model has it.
MATH_SCORE_BYTES = {"sdpa_math": 4.0, "autocast": 6.0, "fused_softmax": 2.0, "explicit_16bit": 2.0}
MATH_UPCAST_QKV_BYTES_PER_WIDTH = {
    "sdpa_math": 6.0,
    "autocast": 0.0,
    "fused_softmax": 0.0,
    "explicit_16bit": 0.0,
}
# At inference nothing is kept, but the path's score matrices are live at once inside one layer:
# sdpa_math (fp32): the scores, the softmax output and _safe_softmax's where() output, 3 × 4; autocast
# (PyTorch 1.x MHA): the fp16 scores, their fp32 cast and the fp32 softmax output, 2 + 4 + 4;
# fused_softmax: the 16-bit scores and probabilities, 2 + 2; explicit_16bit: two 16-bit matrices at a
# time (the GEMM's scores and their scaled copy, then the scaled copy and the probabilities), 2 + 2.
MATH_INFERENCE_SCORE_BYTES = {
    "sdpa_math": 12.0,
    "autocast": 10.0,
    "fused_softmax": 4.0,
    "explicit_16bit": 4.0,
}
FUSED_KERNELS = ("flash", "cudnn", "mem_efficient")


def attention_kernel_bytes(kernel: str, stack: str, t: TowerShape, seq: Num) -> Num:
    """Bytes per sample one layer's attention kernel keeps for backward beyond the 16-bit q, k, v:
    math / explicit: score bytes × heads × s² by math_path (+ the fp32 q, k, v copies' extra 6h·s where
    the path upcasts);
    flash / cudnn: 4 × heads × s (log-sum-exp); mem_efficient: 4 × heads × ⌈s/32⌉·32."""
    if kernel in SCORE_MATRIX_KERNELS:
        path = math_path(kernel, stack)
        return (
            MATH_SCORE_BYTES[path] * t.heads * seq * seq
            + MATH_UPCAST_QKV_BYTES_PER_WIDTH[path] * t.width * seq
        )
    if kernel == "mem_efficient":
        rows = np.ceil(seq / MEM_EFFICIENT_LSE_ALIGN) * MEM_EFFICIENT_LSE_ALIGN
        return LSE_BYTES * t.heads * rows
    if kernel in FUSED_KERNELS:
        return LSE_BYTES * t.heads * seq
    raise ValueError(f"unknown attention kernel {kernel!r}")


def tower_activation_bytes(
    t: TowerShape, seq: Num, grad_ckpt: Num, attention: Num, extra_tokens_bytes: Num = 0.0
) -> Num:
    """Activation bytes per sample for one tower; `attention` is one layer's attention_kernel_bytes.

    No recompute: layers × (s · per-token bytes + the kernel's bytes: the math path's scores).
    Full recompute (activation checkpointing of every block): layers × 2·h·s for each block's input,
    plus one block's full working set (scores included) while it is recomputed in backward.
    """
    return tower_activation_term(t, seq, grad_ckpt, attention, extra_tokens_bytes, 1.0).value


def tower_activation_term(
    t: TowerShape, seq: Num, grad_ckpt: Num, attention: Num, extra_tokens_bytes: Num, factor: float
) -> Term:
    """tower_activation_bytes × `factor` (ACTIVATION_MEMORY_FACTOR) as a formula: one layer keeps
    s · bytes_per_token_layer + the kernel's bytes; extra_bytes are kept outside the blocks."""
    per_layer = "(s * bytes_per_token_layer + attention_kernel_bytes_per_layer)"
    return Term(
        f"(where(grad_ckpt, layers * 2.0 * h * s + {per_layer}, layers * {per_layer}) + extra_bytes)"
        " * activation_factor",
        {
            "grad_ckpt": np.asarray(grad_ckpt, dtype=bool),
            "layers": t.layers,
            "h": t.width,
            "s": seq,
            "bytes_per_token_layer": layer_bytes_per_token(t),
            "attention_kernel_bytes_per_layer": attention,
            "extra_bytes": extra_tokens_bytes,
            "activation_factor": factor,
        },
    )


def vision_tokens(num_patches: Num, patch_dropout: Num) -> Num:
    """Tokens through the blocks: CLS + the patches PatchDropout keeps, max(1, int(P·(1−r)))."""
    return np.maximum(1.0, np.floor(num_patches * (1.0 - patch_dropout))) + 1.0


def vision_extra_bytes(image_size: Num, num_patches: Num, width: int, seq: Num) -> Num:
    """Per-sample activations outside the vision blocks (kept with or without recompute): the input
    pixels saved by the patch-embed conv (3·image², 16-bit), the embedded tokens before patch dropout
    2·h·(P+1), and the final norm's input 2·h·s."""
    return 3 * image_size * image_size * 2.0 + 2.0 * width * (num_patches + 1) + 2.0 * width * seq


def text_extra_bytes(context_length: int, width: int) -> float:
    """Per-sample activations outside the text blocks: embeddings 2·h·s and ln_final's input 2·h·s."""
    return 2 * 2.0 * width * context_length


# ------------------------------------------------------------------------------------- CLIP loss
def clip_loss_bytes(
    micro_batch: Num, world: Num, embed_dim: int, local_loss: Num, gather_with_grad: Num
) -> Num:
    """Per-GPU bytes of the contrastive loss.

    Logits: image→text and text→image, fp32, each with its log-softmax kept for backward
    (2 matrices × 2 tensors × 4 bytes); local loss: b × B rows; without it every GPU builds B × B.
    Gathered features: image and text features of the whole global batch, 16-bit, once for the
    values and (gather_with_grad) once for their gradients.
    """
    return clip_loss_term(micro_batch, world, embed_dim, local_loss, gather_with_grad).value


def clip_loss_term(
    micro_batch: Num, world: Num, embed_dim: int, local_loss: Num, gather_with_grad: Num
) -> Term:
    """clip_loss_bytes as a formula: B is the contrast batch of one micro-step (b × N)."""
    B = micro_batch * world
    return Term(
        "2 * 2 * bytes_fp32 * rows * B + 2 * bytes_16bit * B * e * feature_copies",
        {
            "bytes_fp32": BYTES_FP32,
            "rows": np.where(local_loss, micro_batch, B),
            "B": B,
            "bytes_16bit": BYTES_16BIT,
            "e": embed_dim,
            "feature_copies": np.where(gather_with_grad, 2.0, 1.0),
        },
    )


# ------------------------------------------------------------------------------------- buffers
def zero_buffer_bytes(psi: Num, zero_stage: Num, overlap_comm: Num, persistent_numel: Num) -> Num:
    """Communication buckets and ZeRO-3 prefetch/persistent buffers, 16-bit.

    Stages 1/2: the gradient buckets of reduce_bucket_size elements (two with overlap_comm, one being
    filled while the other is reduced), allocated at their configured size whatever the model's:
    measured on 2 CPU ranks (benchmarks/zero_buffers_cpu.py, DeepSpeed 0.19.8) as two 5e8-element
    bf16 buffers in backward for a 1.7M-parameter model (1,168 bytes/param). Stage 3: one reduce
    bucket, the prefetch bucket of stage3_prefetch_bucket_size gathered elements, and the persistent
    (never partitioned) params; stage 0: DeepSpeed's all-reduce bucket; these never exceed the model
    (not measured).
    """
    return zero_buffers_term(psi, zero_stage, overlap_comm, persistent_numel).value


def zero_buffers_term(psi: Num, zero_stage: Num, overlap_comm: Num, persistent_numel: Num) -> Term:
    """zero_buffer_bytes as a formula (element counts from planner/deepspeed_defaults.py)."""
    return Term(
        "where(zero_stage == 3, min(reduce_bucket_size, psi) * bytes_16bit"
        " + min(stage3_prefetch_bucket_size, psi) * bytes_16bit + persistent_params * bytes_16bit,"
        " where(zero_stage >= 1, reduce_bucket_size * bytes_16bit * where(overlap_comm, 2.0, 1.0),"
        " min(reduce_bucket_size, psi) * bytes_16bit))",
        {
            "zero_stage": np.asarray(zero_stage),
            "reduce_bucket_size": dsd.REDUCE_BUCKET_SIZE,
            "stage3_prefetch_bucket_size": dsd.STAGE3_PREFETCH_BUCKET_SIZE,
            "psi": psi,
            "bytes_16bit": BYTES_16BIT,
            "persistent_params": persistent_numel,
            "overlap_comm": overlap_comm,
        },
    )


def hpz_secondary_bytes(psi: Num, hpz_partition_size: Num) -> Num:
    """ZeRO++ hpZ keeps a secondary 16-bit shard of all params within the hpZ group: 2Ψ/hpz."""
    return np.where(np.asarray(hpz_partition_size) > 1, BYTES_16BIT * psi / hpz_partition_size, 0.0)


def as_floats(obj: Any) -> dict[str, float]:
    """A dataclass of scalar results as plain floats (for pydantic models and JSON)."""
    return {f.name: float(getattr(obj, f.name)) for f in fields(obj)}
