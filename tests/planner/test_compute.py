"""FLOPs per sample, counted like torch's FlopCounterMode, pinned by hand."""

from __future__ import annotations

import numpy as np
import pytest

from planner import profiles as prof
from planner.compute import forward_flops_per_sample, train_flops_per_sample


def test_debug_model_forward_flops_by_hand():
    m = prof.load_model("eva-clip-debug")
    f = forward_flops_per_sample(m, 32, 0.0, contrast_batch=32)
    # vision: 16 patches, 17 tokens, h=64, SwiGLU f=170.
    patch = 2 * 16 * 64 * 3 * 8 * 8  # conv: 2 × out elements × (3·8·8)
    block = 2 * 17 * 64 * 192 + 4 * 17 * 17 * 64 + 2 * 17 * 64 * 64 + 2 * 17 * 64 * 170 * 3
    assert block == 1_740_800
    assert float(f.vision) == patch + 2 * block + 2 * 64 * 32 == 3_878_912
    # text: 16 tokens, h=32, GELU f=128, full (non-causal) attention as FlopCounterMode counts SDPA.
    tblock = 2 * 16 * 32 * 96 + 4 * 16 * 16 * 32 + 2 * 16 * 32 * 32 + 2 * 16 * 32 * 128 * 2
    assert float(f.text) == 2 * tblock + 2 * 32 * 32 == 854_016
    # loss: image→text and text→image logits, 2·e·B each per sample.
    assert float(f.loss) == 2 * 2 * 32 * 32
    assert float(f.total) == 3_878_912 + 854_016 + 4096


def test_18b_forward_and_training_flops():
    m = prof.load_model("eva-clip-18b")
    f = forward_flops_per_sample(m, 224, 0.5)
    # 129 tokens through 48 blocks of h=5120, f=25600: ≈ 2 × 17.6e9 params × 129 tokens + attention.
    s, h, ff = 129, 5120, 25600
    block = 2 * s * h * 3 * h + 4 * s * s * h + 2 * s * h * h + 2 * s * h * ff * 2
    assert float(f.vision) == 2 * 256 * h * 3 * 14 * 14 + 48 * block + 2 * h * 1536
    t = train_flops_per_sample(f, True)
    assert float(t.model) == 3 * float(f.total) - float(f.patch_embed)
    assert float(t.hardware) == float(t.model) + float(f.vision_blocks + f.text_blocks)


def test_vectorised_equals_scalar():
    m = prof.load_model("eva02-clip-l14")
    img = np.array([224, 336, 224, 448])
    r = np.array([0.0, 0.0, 0.5, 0.25])
    B = np.array([1024, 2048, 4096, 8192])
    v = forward_flops_per_sample(m, img, r, B)
    for i in range(4):
        s = forward_flops_per_sample(m, int(img[i]), float(r[i]), int(B[i]))
        assert float(v.total[i]) == float(s.total)


def test_flops_match_flopcounter_on_a_real_block():
    """FlopCounterMode on torch modules shaped like one EVA block agrees with block_forward_flops.

    On the meta device SDPA runs its math path (two bmm, counted in full even when causal); on CPU
    the fused `_scaled_dot_product_flash_attention_for_cpu` has no flop formula and counts 0, so
    FLOPs must be counted on meta (docs/planner-model.md, "3. Compute", the pitfall)."""
    torch = pytest.importorskip("torch")
    from torch.utils.flop_counter import FlopCounterMode

    from planner.compute import block_forward_flops, text_shape

    m = prof.load_model("eva-clip-debug")
    t = text_shape(m)
    s, h, f = 16, t.width, t.mlp_hidden
    meta = torch.device("meta")
    x = torch.randn(1, s, h, device=meta)
    qkv, proj = torch.nn.Linear(h, 3 * h, device=meta), torch.nn.Linear(h, h, device=meta)
    fc1, fc2 = torch.nn.Linear(h, f, device=meta), torch.nn.Linear(f, h, device=meta)
    with FlopCounterMode(display=False) as fc:
        q, k, v = qkv(x).view(1, s, 3, t.heads, -1).permute(2, 0, 3, 1, 4)
        a = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
        y = proj(a.transpose(1, 2).reshape(1, s, h))
        fc2(torch.nn.functional.gelu(fc1(y)))
    assert fc.get_total_flops() == block_forward_flops(t, float(s))
