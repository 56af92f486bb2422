"""The official initialisation (baaivision/EVA eva_vit_model.py `_init_weights`, `fix_init_weight`,
`init_scale`; OpenCLIP `TextTransformer.init_parameters`), checked on eva-clip-debug's tensors by
their sample standard deviation (≥ 2,048 elements each: a few % sampling error; the tolerance is
10 %), and the head's bias following `qkv_bias`."""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")

from planner.profiles import load_model  # noqa: E402


@pytest.fixture(scope="module")
def model():
    from evaclip.model import build_model

    torch.manual_seed(0)
    return build_model(load_model("eva-clip-debug"))


def _std(t: torch.Tensor) -> float:
    return float(t.detach().float().std())


def test_vision_init(model):
    v = model.visual
    for i, blk in enumerate(v.blocks, start=1):
        # fix_init_weight: output projections of block i (1-based) ÷ √(2i); the rest trunc-normal 0.02.
        assert _std(blk.attn.proj.weight) == pytest.approx(0.02 / math.sqrt(2 * i), rel=0.1)
        assert _std(blk.mlp.w3.weight) == pytest.approx(0.02 / math.sqrt(2 * i), rel=0.1)
        assert _std(blk.mlp.w1.weight) == pytest.approx(0.02, rel=0.1)
        assert _std(blk.attn.q_proj.weight) == pytest.approx(0.02, rel=0.1)
        assert not blk.attn.q_bias.any() and not blk.attn.proj.bias.any()
    # The head: trunc-normal 0.02 × init_scale 0.001.
    assert _std(v.head.weight) == pytest.approx(2e-5, rel=0.1)
    assert not v.head.bias.any()
    assert _std(v.pos_embed) == pytest.approx(0.02, rel=0.1)


def test_text_init(model):
    t = model.text
    w, layers = t.cfg.width, t.cfg.layers
    proj_std = w**-0.5 * (2 * layers) ** -0.5
    assert _std(t.token_embedding.weight) == pytest.approx(0.02, rel=0.1)
    assert _std(t.positional_embedding) == pytest.approx(0.01, rel=0.15)  # 512 elements
    assert _std(t.text_projection) == pytest.approx(w**-0.5, rel=0.1)
    for blk in t.transformer.resblocks:
        assert _std(blk.attn.in_proj_weight) == pytest.approx(w**-0.5, rel=0.1)
        assert _std(blk.attn.out_proj.weight) == pytest.approx(proj_std, rel=0.1)
        assert _std(blk.mlp.c_fc.weight) == pytest.approx((2 * w) ** -0.5, rel=0.1)
        assert _std(blk.mlp.c_proj.weight) == pytest.approx(proj_std, rel=0.1)
        # nn.MultiheadAttention zeroes its biases; nn.Linear's default bias stays (uniform ±1/√fan_in).
        assert not blk.attn.in_proj_bias.any() and not blk.attn.out_proj.bias.any()
        bound = 1 / math.sqrt(w)
        assert blk.mlp.c_fc.bias.abs().max() <= bound and _std(blk.mlp.c_fc.bias) > 0.3 * bound


def test_logit_scale_and_forward_does_not_clamp():
    from evaclip.model import build_model

    model = build_model(load_model("eva-clip-debug"))
    assert float(model.logit_scale.detach()) == pytest.approx(math.log(1 / 0.07))
    with torch.no_grad():
        model.logit_scale.fill_(5.0)
    tokens = torch.randint(1, 49407, (2, model.spec.text.context_length))
    _, _, scale = model(torch.randn(2, 3, 32, 32), tokens)
    assert float(scale.detach()) == pytest.approx(math.exp(5.0))  # official: exp only; the step clamps


@pytest.mark.parametrize(
    ("name", "bias"), [("eva02-clip-b16", True), ("eva-clip-8b", False), ("eva-clip-18b", False)]
)
def test_head_bias_follows_qkv_bias(name, bias):
    from evaclip.model import build_model

    with torch.device("meta"):
        m = build_model(load_model(name))
    assert (m.visual.head.bias is not None) is bias
