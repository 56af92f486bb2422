"""Parameter counts derived from the profiles, pinned against hand arithmetic and published totals."""

from __future__ import annotations

import pytest

from planner import profiles as prof
from planner.params import count_params, param_tensors, zero3_residency


def test_debug_model_counts_by_hand():
    m = prof.load_model("eva-clip-debug")
    c = count_params(m)
    # vision: w=64, patch 8, 32px → 16 patches + CLS = 17 tokens, SwiGLU hidden int(64·2.6667)=170, sub-LN,
    # LayerNorm, q/v bias. Block: norm1 128 + q_bias/v_bias 128 + q/k/v 3·4096 + inner_attn_ln 128
    # + proj 4096+64 + norm2 128 + w1 10880+170 + w2 10880+170 + ffn_ln 2·170 + w3 10880+64 = 50,344.
    block = 128 + 128 + 3 * 4096 + 128 + 4160 + 128 + 11050 + 11050 + 340 + 10944
    assert block == 50_344
    vision = 64 + 17 * 64 + (64 * 3 * 8 * 8 + 64) + 2 * block + 128 + (64 * 32 + 32)
    assert c.vision == vision == 116_400
    # text: w=32, 2 layers, ctx 16, MLP 128. Block: ln_1 64 + in_proj 3072+96 + out_proj 1024+32 + ln_2 64
    # + c_fc 4096+128 + c_proj 4096+32 = 12,704.
    tblock = 64 + 3168 + 1056 + 64 + 4224 + 4128
    text = 49408 * 32 + 16 * 32 + 2 * tblock + 64 + 32 * 32
    assert c.text == text == 1_608_064
    assert c.logit_scale == 1
    assert c.total == 116_400 + 1_608_064 + 1
    assert (c.largest_layer, c.largest_layer_module) == (49408 * 32, "text.token_embedding")


def test_eva_clip_18b_by_hand():
    m = prof.load_model("eva-clip-18b")
    c = count_params(m)
    w, f = 5120, 25600
    # RMSNorm (weight only), fused qkv (no sub-LN) without bias, GELU MLP, 48 blocks, 257 tokens,
    # a head without bias (qkv_bias false, as the official shinji code builds it).
    block = w + 3 * w * w + (w * w + w) + w + (w * f + f) + (f * w + w)
    assert block == 367_047_680
    vision = 48 * block + w + 257 * w + (w * 3 * 14 * 14 + w) + w + w * 1536
    assert c.vision == vision == 17_630_494_720
    tw, tf = 1280, 5120
    tblock = 2 * tw + (3 * tw * tw + 3 * tw) + (tw * tw + tw) + 2 * tw + (tw * tf + tf) + (tf * tw + tw)
    text = 49408 * tw + 77 * tw + 32 * tblock + 2 * tw + tw * 1536
    assert c.text == text == 694_987_520
    # The official total (the released checkpoint's parameter count).
    assert c.total == 18_325_482_241
    assert c.largest_layer == w * f + f  # fc1 of a vision block (DeepSpeed's largest_layer_params)


@pytest.mark.parametrize(
    ("name", "total"),
    # Parameter counts of the official models as built by baaivision/EVA (EVA-CLIP-18B/shinji):
    # their vision heads have no bias (issue 15).
    [("eva-clip-8b", 8_220_748_545), ("eva-clip-18b", 18_325_482_241)],
)
def test_official_totals_8b_18b(name, total):
    m = prof.load_model(name)
    assert count_params(m).total == total
    assert not any(t.name == "visual.head.bias" for t in param_tensors(m))


@pytest.mark.parametrize("name", sorted(n for n in prof.index("models")))
def test_counts_near_published(name):
    m = prof.load_model(name)
    if m.published is None:
        pytest.skip("no published totals")
    c = count_params(m)
    # The papers mostly round down ("18B ≈ 18.3B"); E/14 rounds its 4.35B vision tower up to 4.4B.
    assert -0.02 <= c.total / m.published.total_params - 1 <= 0.06, (c.total, m.published.total_params)
    assert -0.02 <= c.vision / m.published.vision_params - 1 <= 0.06, (c.vision, m.published.vision_params)


@pytest.mark.parametrize("name", sorted(n for n in prof.index("models")))
def test_tensor_list_is_consistent(name):
    m = prof.load_model(name)
    ts = param_tensors(m)
    assert len({t.name for t in ts}) == len(ts), "parameter names are unique"
    assert sum(t.numel for t in ts) == count_params(m).total
    blocks = {t.block for t in ts if t.tower == "vision" and t.block is not None}
    assert blocks == set(range(m.vision.depth))
    assert not any("k_bias" in t.name for t in ts), "no k-bias in EVA attention"


def test_zero3_residency_18b():
    m = prof.load_model("eva-clip-18b")
    r = zero3_residency(m, 100_000, 1_000_000_000)
    c = count_params(m)
    assert r.persistent + r.gathered == c.total
    # Persistent (≤ 1e5 elements): norms, biases, cls token, logit_scale; the 77×1280 text positions
    # (98,560) too; the vision pos_embed (1,315,840) is gathered.
    assert r.persistent < 0.001 * c.total
    # The text tower sits after the vision tower; parameters used within 5e8 elements of the end of
    # forward are kept for backward (2 × suffix < 1e9), the vision tower is re-gathered.
    assert c.vision * 0.99 < r.regathered_backward < r.gathered
