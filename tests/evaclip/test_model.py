"""evaclip.model: every bundled model builds on the meta device with exactly the planner's
parameter tensors, and the planner's forward FLOPs match FlopCounterMode on the real model."""

from __future__ import annotations

import functools

import pytest

torch = pytest.importorskip("torch")

from planner.profiles import index, load_model  # noqa: E402

MODELS = list(index("models"))


@functools.cache
def _meta_model(name: str, image_size: int | None = None):
    """Built once per model and image size (meta tensors: no memory); tests set patch dropout."""
    from evaclip.model import build_model

    with torch.device("meta"):
        return build_model(load_model(name), image_size=image_size)


def count_parameters(module) -> int:
    """Elements of every parameter of a (meta-device) module."""
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("name", MODELS)
def test_parameters_match_planner_exactly(name):
    from planner.params import count_params, param_tensors

    spec = load_model(name)
    model = _meta_model(name)
    built = {n: tuple(p.shape) for n, p in model.named_parameters()}
    planned = {t.name: tuple(t.shape) for t in param_tensors(spec)}
    # logit_scale is (1,) here, () in OpenCLIP and the planner: DeepSpeed cannot broadcast a 0-d
    # bf16 tensor (see EvaCLIP.__init__). One element either way.
    assert built.pop("logit_scale") == (1,) and planned.pop("logit_scale") in ((), (1,))
    assert built == planned  # same names (the official state-dict names) and shapes
    counts = count_params(spec)
    assert count_parameters(model.visual) == counts.vision
    assert count_parameters(model.text) == counts.text
    assert count_parameters(model) == counts.total


@pytest.mark.parametrize("name", MODELS)
def test_parameter_count_near_published(name):

    spec = load_model(name)
    if spec.published is None:
        pytest.skip("no published size")
    total = count_parameters(_meta_model(name))
    # Papers round to two or three digits, mostly down (each profile's `published.source`, e.g.
    # arXiv 2402.04252 Table 1, against the count its config implies): 1.14B is published as 1.1B,
    # 1.37B as 1.3B (EVA01-CLIP-g/14+); the same band as tests/planner/test_params.py.
    assert spec.published.total_params * 0.99 <= total <= spec.published.total_params * 1.06


@pytest.mark.parametrize("patch_dropout", [0.0, 0.5])
@pytest.mark.parametrize("name", MODELS)
def test_planner_forward_flops_match_flop_counter(name, patch_dropout):
    from torch.utils.flop_counter import FlopCounterMode

    from planner.compute import forward_flops_per_sample

    spec = load_model(name)
    image_size = spec.recipe.image_size
    model = _meta_model(name, image_size)
    model.set_patch_dropout(patch_dropout)
    model.train()  # patch dropout acts in training only
    batch = 2
    with torch.device("meta"):
        images = torch.empty(batch, 3, image_size, image_size)
        tokens = torch.zeros(batch, spec.text.context_length, dtype=torch.long)
        counter = FlopCounterMode(display=False)
        with counter:
            model(images, tokens)
    measured = counter.get_total_flops()  # an int: FLOPs of the whole batch
    predicted = forward_flops_per_sample(spec, image_size, patch_dropout).total * batch
    # Exact: the planner's formulas count the same matmuls and attention FLOPs the counter does.
    # The per-sample figure is a float; below 2^53 it holds integers exactly, so == is integer equality.
    assert measured < 2**53 and float(predicted).is_integer(), f"planner {predicted!r} is not a whole number"
    assert int(predicted) == measured, (
        f"planner {int(predicted):,} vs FlopCounterMode {measured:,} for {batch} samples"
    )


def test_debug_model_forward_and_backward_cpu():
    from evaclip.loss import clip_loss
    from evaclip.model import build_model

    torch.manual_seed(0)
    spec = load_model("eva-clip-debug")
    model = build_model(spec, patch_dropout=0.5, grad_ckpt=True)
    model.train()
    images = torch.randn(4, 3, 32, 32)
    tokens = torch.randint(1, 49406, (4, spec.text.context_length))
    img, txt, scale = model(images, tokens)
    assert img.shape == txt.shape == (4, spec.embed_dim)
    assert torch.allclose(img.norm(dim=-1), torch.ones(4), atol=1e-5)
    assert float(scale.detach()) == pytest.approx(1 / 0.07, rel=1e-5)
    loss = clip_loss(img, txt, scale)
    loss.backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("name", ["eva01-clip-g14", "eva-clip-18b"])
def test_variants_build_the_right_layers(name):
    from evaclip.model import RMSNorm

    spec = load_model(name)
    model = _meta_model(name)
    blk = model.visual.blocks[0]
    if spec.vision.norm == "rmsnorm":
        assert isinstance(blk.norm1, RMSNorm) and blk.attn.q_bias is None
    else:
        assert isinstance(blk.norm1, torch.nn.LayerNorm) and blk.attn.q_bias is not None
    assert blk.postnorm == spec.vision.postnorm
