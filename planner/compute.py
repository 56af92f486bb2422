"""FLOPs per sample and compute time, counted the way torch.utils.flop_counter.FlopCounterMode counts.

FlopCounterMode counts 2 × multiply-accumulates of every mm/addmm/bmm/convolution (biases, norms,
activations, softmax and RoPE are free) and scaled-dot-product attention as full non-causal
attention: 2·s_q·s_k·d for QKᵀ plus 2·s_q·s_k·d for AV per head. The text tower is causal; both
FlopCounterMode and this model count its attention in full (a masked math or memory-efficient kernel
does compute the whole matrix; only a causal flash kernel skips half, which we do not assume).

Every function works on floats and numpy arrays alike (image size, patch dropout and batch may vary
per candidate plan).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from planner.memory import TowerShape, vision_tokens
from planner.spec import ModelSpec

Num = Any


def vision_shape(model: ModelSpec) -> TowerShape:
    v = model.vision
    return TowerShape(v.depth, v.width, v.heads, v.mlp_hidden, v.mlp == "swiglu", v.subln, v.rope)


def text_shape(model: ModelSpec) -> TowerShape:
    t = model.text
    return TowerShape(t.layers, t.width, t.heads, t.mlp_hidden, False, False, False)


def block_forward_flops(t: TowerShape, seq: Num) -> Num:
    """One transformer block, one sample: q/k/v 2·s·h·3h, attention 4·s²·h, out-proj 2·s·h², MLP
    2·s·h·f × (2 GELU matmuls | 3 SwiGLU matmuls)."""
    h, f = t.width, t.mlp_hidden
    qkv = 2.0 * seq * h * 3 * h
    attn = 4.0 * seq * seq * h
    proj = 2.0 * seq * h * h
    mlp = 2.0 * seq * h * f * (3 if t.swiglu else 2)
    return qkv + attn + proj + mlp


@dataclass(frozen=True)
class FlopsBreakdown:
    """Forward FLOPs per sample."""

    vision: Num
    text: Num
    loss: Num
    total: Num
    vision_blocks: Num  # the part that activation checkpointing recomputes
    text_blocks: Num
    patch_embed: Num


def forward_flops_per_sample(
    model: ModelSpec,
    image_size: Num | None = None,
    patch_dropout: Num | None = None,
    contrast_batch: Num = 0,
    loss_rows_per_sample: Num = 1.0,
) -> FlopsBreakdown:
    """Forward FLOPs of one image-text pair through both towers and the CLIP loss.

    vision: patch-embed conv 2·P·h·3p² over all P patches (patch dropout comes after it), blocks on
    CLS + kept patches, head Linear on the CLS token 2·h·e. text: blocks on the context length,
    projection of the EOT token 2·h·e. loss: logits image→text and text→image, 2·e·B each per row,
    where B = contrast_batch (the global batch with local loss + all-gather); loss_rows_per_sample is
    1 with local loss and B/b without (each GPU then builds all B rows).
    """
    v, e = model.vision, model.embed_dim
    img = v.image_size if image_size is None else image_size
    r = model.recipe.patch_dropout if patch_dropout is None else patch_dropout
    num_patches = (np.floor_divide(img, v.patch_size)) ** 2
    s_v = vision_tokens(num_patches, r)
    patch = 2.0 * num_patches * v.width * 3 * v.patch_size**2
    vb = v.depth * block_forward_flops(vision_shape(model), s_v)
    vision = patch + vb + 2.0 * v.width * e
    tb = model.text.layers * block_forward_flops(text_shape(model), float(model.text.context_length))
    text = tb + 2.0 * model.text.width * e
    loss = 2 * 2.0 * e * contrast_batch * loss_rows_per_sample
    return FlopsBreakdown(vision, text, loss, vision + text + loss, vb, tb, patch)


@dataclass(frozen=True)
class TrainFlops:
    """FLOPs per sample of one training step: model FLOPs (3× forward: forward + backward with input
    and weight gradients; the patch-embed conv needs no input gradient) and hardware FLOPs (plus
    one more forward of every block when activation checkpointing recomputes it)."""

    forward: Num
    backward: Num
    recompute: Num
    model: Num  # forward + backward: what MFU counts
    hardware: Num  # model + recompute: what the GPU executes


def train_flops_per_sample(fwd: FlopsBreakdown, grad_ckpt: Num) -> TrainFlops:
    backward = 2.0 * fwd.total - fwd.patch_embed
    recompute = np.where(grad_ckpt, fwd.vision_blocks + fwd.text_blocks, 0.0)
    model = fwd.total + backward
    return TrainFlops(fwd.total, backward, recompute, model, model + recompute)


def compute_time_s(hardware_flops: Num, peak_flops: float, mfu: float, gemm_eff: Num = 1.0) -> Num:
    """Time for the GPU to execute `hardware_flops` at `mfu` of its dense peak (the profile's
    achievable end-to-end utilisation, applied to executed FLOPs so recompute costs time), slowed by
    `gemm_eff` = gemm_efficiency(rows) when the micro-batch's GEMMs are too short to fill the GPU."""
    return hardware_flops / (peak_flops * mfu * gemm_eff)


# --------------------------------------------------------------------------- micro-batch dependence
# A GEMM with M rows (M = micro-batch × tokens) reaches the profile's MFU only when M is large:
# an H100 runs 132 SMs on output tiles of 128 rows (CUTLASS/cuBLAS Hopper kernels), so M below a
# few hundred rows leaves most SMs idle or splits K at a loss. evaplan assumption: the profile's MFU
# is what large micro-batches reach, and the efficiency of M rows is M / (M + GEMM_HALF_ROWS), half
# of it at 256 rows (two 128-row tiles per SM wave) — recipes with b ≥ 100 lose < 2 %
# (b × 129 vision tokens ≥ 12,900 rows). GPU evidence: benchmarks/results/*.log (one H100).
GEMM_HALF_ROWS = 256.0
# Fixed cost of every micro-batch: eager PyTorch launches every kernel from Python. evaplan
# assumption: ~20 kernels per transformer block forward (2 norms, q/k/v + bias, 2 RoPE, SDPA,
# out-proj, 2 residual adds, 2-3 MLP GEMMs + activation, sub-LN, drop-path), backward 2× forward
# and a recompute 1× more (the 3×/4× of the FLOP count), at KERNEL_LAUNCH_S each. evaplan
# assumption: a CUDA/HIP kernel launch plus eager PyTorch dispatch costs a few µs of host time that
# small kernels cannot hide; 5 µs taken. A calibration replaces the derived figure
# (HardwareSpec.microbatch_overhead_s).
KERNELS_PER_BLOCK_FORWARD = 20
KERNEL_LAUNCH_S = 5e-6
# Fixed cost of every optimizer step: Adam is a memory-bound pass over the rank's partition of the
# fp32 optimizer states. Bytes per parameter: reads fp32 master 4 + exp_avg 4 + exp_avg_sq 4 +
# fp32 gradient 4 (DeepSpeed's bf16/fp16 optimizers keep fp32 gradient partitions), writes master,
# exp_avg, exp_avg_sq 12 + the 16-bit parameter copy 2 → 30 B/param at HBM bandwidth. A calibration
# replaces the derived figure (HardwareSpec.step_overhead_s).
OPTIMIZER_BYTES_PER_PARAM = 30.0


def gemm_efficiency(rows: Num) -> Num:
    """Share of the large-GEMM rate reached by GEMMs of `rows` rows: rows / (rows + GEMM_HALF_ROWS)."""
    return rows / (rows + GEMM_HALF_ROWS)


def microbatch_overhead_s(model: ModelSpec, grad_ckpt: Num) -> Num:
    """Launch overhead of one micro-batch's forward + backward (+ recompute): blocks × kernels × latency."""
    blocks = model.vision.depth + model.text.layers
    passes = np.where(grad_ckpt, 4.0, 3.0)
    return blocks * KERNELS_PER_BLOCK_FORWARD * passes * KERNEL_LAUNCH_S


def step_overhead_s(
    psi: Num, world: Num, zero_stage: Num, offload_optimizer: Num, hbm_bytes_per_s: float
) -> Num:
    """The optimizer's memory-bound pass over this rank's partition (Ψ/N from ZeRO-1 on, Ψ without
    ZeRO); zero with the optimizer offloaded (the CPU step is in planner.offload)."""
    partition = np.where(np.asarray(zero_stage) >= 1, psi / world, psi * 1.0)
    return np.where(offload_optimizer, 0.0, OPTIMIZER_BYTES_PER_PARAM * partition / hbm_bytes_per_s)
