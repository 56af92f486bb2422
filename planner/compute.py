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

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from planner.memory import TowerShape, vision_tokens
from planner.spec import ModelSpec
from planner.terms import Term, evaluate

Num = Any


def vision_shape(model: ModelSpec) -> TowerShape:
    v = model.vision
    return TowerShape(v.depth, v.width, v.heads, v.mlp_hidden, v.mlp == "swiglu", v.subln, v.rope)


def text_shape(model: ModelSpec) -> TowerShape:
    t = model.text
    return TowerShape(t.layers, t.width, t.heads, t.mlp_hidden, False, False, False)


# One transformer block, one sample: q/k/v 2·s·h·3h, attention 4·s²·h, out-proj 2·s·h², MLP
# 2·s·h·f × k (k = 2 GELU matmuls | 3 SwiGLU matmuls).
BLOCK_FLOPS = "2.0 * s * h * 3 * h + 4.0 * s * s * h + 2.0 * s * h * h + 2.0 * s * h * f * k"
TOWER_BLOCKS_FLOPS = f"layers * ({BLOCK_FLOPS})"
# The patch-embed conv: 2 · P patches · h outputs · 3p² inputs each.
PATCH_EMBED_FLOPS = "2.0 * P * h * 3 * p ** 2"


def _block_inputs(t: TowerShape, seq: Num) -> dict[str, Num]:
    return {"s": seq, "h": t.width, "f": t.mlp_hidden, "k": 3 if t.swiglu else 2, "layers": t.layers}


def block_forward_flops(t: TowerShape, seq: Num) -> Num:
    """One transformer block, one sample (BLOCK_FLOPS)."""
    return Term(BLOCK_FLOPS, _block_inputs(t, seq)).value


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
    terms: dict[str, Term] = field(default_factory=dict)  # vision, text and loss as formulas


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
    text_inputs = _block_inputs(text_shape(model), float(model.text.context_length))
    terms = {
        "vision": Term(
            f"{PATCH_EMBED_FLOPS} + {TOWER_BLOCKS_FLOPS} + 2.0 * h * e",
            {"P": num_patches, "p": v.patch_size, **_block_inputs(vision_shape(model), s_v), "e": e},
        ),
        "text": Term(f"{TOWER_BLOCKS_FLOPS} + 2.0 * h * e", {**text_inputs, "e": e}),
        "loss": Term("2 * 2.0 * e * B * rows", {"e": e, "B": contrast_batch, "rows": loss_rows_per_sample}),
    }
    vision, text, loss = (terms[k].value for k in ("vision", "text", "loss"))
    vi, ti = terms["vision"].inputs, terms["text"].inputs
    patch = evaluate(PATCH_EMBED_FLOPS, vi)
    vb, tb = evaluate(TOWER_BLOCKS_FLOPS, vi), evaluate(TOWER_BLOCKS_FLOPS, ti)
    return FlopsBreakdown(vision, text, loss, vision + text + loss, vb, tb, patch, terms)


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
    model = model_flops_term(fwd).value
    return TrainFlops(fwd.total, backward, recompute, model, hardware_flops_term(model, fwd, grad_ckpt).value)


def model_flops_term(fwd: FlopsBreakdown) -> Term:
    """Forward + backward (input and weight gradients: 2× forward, less the patch-embed conv's input
    gradient, which nothing needs)."""
    return Term(
        "vision + text + loss + (2.0 * (vision + text + loss) - patch_embed)",
        {"vision": fwd.vision, "text": fwd.text, "loss": fwd.loss, "patch_embed": fwd.patch_embed},
    )


def hardware_flops_term(model_flops: Num, fwd: FlopsBreakdown, grad_ckpt: Num) -> Term:
    """Model FLOPs plus, with activation checkpointing, one more forward of every block."""
    return Term(
        "model + where(grad_ckpt, vision_blocks + text_blocks, 0.0)",
        {
            "model": model_flops,
            "grad_ckpt": np.asarray(grad_ckpt, dtype=bool),
            "vision_blocks": fwd.vision_blocks,
            "text_blocks": fwd.text_blocks,
        },
    )
