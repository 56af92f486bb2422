"""FLOPs per sample, counted the way torch.utils.flop_counter.FlopCounterMode counts (the time those
FLOPs take is priced operation by operation in planner/ops.py; MFU is an output).

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
