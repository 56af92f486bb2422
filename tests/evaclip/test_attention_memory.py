"""What the real evaclip attention keeps for backward under each SDPA backend a CPU has, against the
planner's per-layer formula (planner.memory.attention_kernel_bytes, issue 26): the saved tensors of every
attention call of the tiny debug model, counted with torch.autograd.graph.saved_tensors_hooks."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from planner.compute import text_shape, vision_shape  # noqa: E402
from planner.memory import attention_kernel_bytes  # noqa: E402
from planner.profiles import load_model  # noqa: E402

BATCH = 3


def _kept_per_call(backend) -> list[tuple[int, int, int]]:
    """(bytes kept, tokens, width) of each attention call of one forward of the debug model in bf16:
    the distinct storages its autograd saves, less the output's (the tensor it returns; on a GPU the
    trainer's flash-attn output is what the out-projection's input views, counted there)."""
    from torch.nn.attention import sdpa_kernel

    import evaclip.model as em

    spec = load_model("eva-clip-debug")
    torch.manual_seed(0)
    model = em.build_model(spec).to(torch.bfloat16)
    calls: list[tuple[int, int, int]] = []
    inner = em.attention

    def counted(q, k, v, *, causal):
        kept: dict[int, int] = {}

        def pack(t):
            kept[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            out = inner(q, k, v, causal=causal)
        kept.pop(out.untyped_storage().data_ptr(), None)
        _, h, s, d = q.shape
        calls.append((sum(kept.values()), s, h * d))
        return out

    images = torch.randn(BATCH, 3, spec.vision.image_size, spec.vision.image_size, dtype=torch.bfloat16)
    tokens = torch.randint(0, spec.text.vocab_size, (BATCH, spec.text.context_length))
    em.attention = counted
    try:
        with sdpa_kernel(backend):
            model(images, tokens)
    finally:
        em.attention = inner
    return calls


@pytest.mark.parametrize(("backend_name", "kernel"), [("MATH", "math"), ("FLASH_ATTENTION", "flash")])
def test_saved_attention_bytes_match_planner_per_layer(backend_name: str, kernel: str) -> None:
    """Per call: the 16-bit q, k, v (6·h·s, counted in planner.memory.layer_bytes_per_token) plus the
    kernel's own bytes: math 4·a·s² fp32 probabilities and fp32 q, k, v copies; flash the fp32
    log-sum-exp 4·a·s. The memory-efficient kernel has no CPU implementation (not measured here)."""
    from torch.nn.attention import SDPBackend

    spec = load_model("eva-clip-debug")
    calls = _kept_per_call(getattr(SDPBackend, backend_name))
    vs, ts = vision_shape(spec), text_shape(spec)
    shapes = [vs] * vs.layers + [ts] * ts.layers
    assert len(calls) == len(shapes)
    for (kept, s, w), shape in zip(calls, shapes, strict=True):
        assert w == shape.width
        planned = BATCH * (6 * w * s + float(attention_kernel_bytes(kernel, "eager", shape, float(s))))
        assert kept == planned, (kernel, s, w)


def test_math_keeps_more_than_flash_on_the_same_model() -> None:
    """The measured gap math − flash is the planner's gap, layer by layer (both towers)."""
    from torch.nn.attention import SDPBackend

    spec = load_model("eva-clip-debug")
    math, flash = (_kept_per_call(b) for b in (SDPBackend.MATH, SDPBackend.FLASH_ATTENTION))
    vs, ts = vision_shape(spec), text_shape(spec)
    for (m, s, _), (f, _, _), shape in zip(math, flash, [vs] * vs.layers + [ts] * ts.layers, strict=True):
        gap = attention_kernel_bytes("math", "eager", shape, float(s)) - attention_kernel_bytes(
            "flash", "eager", shape, float(s)
        )
        assert m - f == BATCH * float(gap) > 0
