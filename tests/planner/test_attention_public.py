"""The math path against a public measurement of the same layouts with and without a flash kernel
(issue 26): Chinese-CLIP's FlashAttention comparison, https://github.com/OFA-Sys/Chinese-CLIP/blob/
master/flash_attention_En.md (commit 7d661ef, 2023-05-08): one 8 × A100-80GB machine, FlashAttention
0.2.8, PyTorch 1.10.1, fine-tuning at the repository's default `--precision amp`, the same batch per
GPU with and without `--use-flash-attention`, which swaps the vision tower's nn.MultiheadAttention
(the math path) for FlashMHA and leaves the BERT text tower as it is. Batch time in s/it and memory in
GB per GPU (nvidia-smi: what the caching allocator holds). The planner's OpenCLIP ViTs have the same
vision towers; only the vision tower's attention is compared."""

from __future__ import annotations

import pytest

from planner import ops
from planner import profiles as prof
from planner.estimate import memory_report
from planner.intervals import published_compute_scale
from planner.spec import ParallelPlan, TrainingSpec

# (model, image size, batch per GPU, s/it without, s/it with, GB without, GB with)
CN_CLIP_FLASH = [
    ("openclip-vit-b16", 224, 450, 1.477, 0.960, 80, 56),
    ("openclip-vit-l14", 224, 128, 1.293, 0.785, 77, 50),
    ("openclip-vit-l14", 336, 40, 1.397, 0.587, 78, 37),
    ("openclip-vit-h14", 224, 64, 1.265, 0.845, 76, 57),
]
GIB = 2**30


@pytest.mark.parametrize(
    ("name", "image", "batch", "s_math", "s_flash", "gb_math", "gb_flash"), CN_CLIP_FLASH
)
def test_math_over_flash_memory_and_time_against_cn_clip(
    name, image, batch, s_math, s_flash, gb_math, gb_flash
):
    """Memory: the planner's extra vision activations under math (6 bytes per score per layer: autocast's
    fp32 softmax output and its fp16 copy for the AV bmm) are 55–65 % of the measured difference. The
    rest is not in the planner: nvidia-smi counts what the caching allocator holds, and the math runs
    sit at the 80 GB ceiling (77–80 GB), where freed s² blocks stay reserved.
    Time: the predicted extra per step (score GEMMs and the score matrix's memory-bound passes, forward
    and backward, at the published-runs compute scale) is 29–38 % of the measured difference (34–45 %
    at the scale 0.4083 fitted before the LAION-blog and NeMo-comparison runs were bundled; the extra
    time goes as 1 / scale). Not
    modelled: cuBLAS batched GEMMs whose leading dimensions (197, 257, 577 tokens) are not multiples of
    8 lose their vectorised tensor-core paths, and allocator retries at the memory ceiling. The bounds
    pin what the model explains, so a change that loses it fails."""
    m, hw = prof.load_model(name), prof.load_hardware("a100-80gb")
    plan = ParallelPlan(
        nodes=1, gpus_per_node=8, zero_stage=0, micro_batch=batch, grad_accum=1, grad_ckpt=False
    )

    def vision_bytes(kernel: str) -> float:
        tr = TrainingSpec.from_recipe(
            m.recipe,
            global_batch=8 * batch,
            image_size=image,
            stack="amp",
            attention=kernel,
            precision="fp16",
        )
        return memory_report(m, hw, plan, tr).gpu_terms["activations_vision"]

    extra_gib = (vision_bytes("math") - vision_bytes("flash")) / GIB
    assert 0.5 <= extra_gib / (gb_math - gb_flash) <= 1.0

    v = m.vision
    s = float((image // v.patch_size) ** 2 + 1)
    scale = published_compute_scale()
    assert scale is not None

    def vision_attention_s(kernel: str) -> float:
        t = ops.attention_time_s(
            hw, kernel, batch * s, s, v.heads, v.head_width, 1.0, False, "fp16", scale, "amp"
        )
        return v.depth * float(t)

    extra_s = vision_attention_s("math") - vision_attention_s("flash")
    assert 0.25 <= extra_s / (s_math - s_flash) <= 1.0


def test_sdpa_math_efficiency_is_the_measured_share_of_the_roofline():
    """SDPA math forward, EVA02-B/16 vision at micro-batch 256 on one H100 (benchmarks/results/
    sdpa-backends-h100.log: 3.367 ms): the roofline gives 1.388 ms, the eager path with its efficiency
    the measured time."""
    hw = prof.load_hardware("h100-sxm")
    seqs, s, heads, d = 256, 197.0, 12, 64

    def fwd_s(stack: str) -> float:
        return float(
            ops.math_attention_time_s(hw, stack, seqs, s, heads, d, 1.0, False, "bf16", 1.0, backward=False)
        )

    eager = ops.MATH_ATTENTION["eager"]
    assert fwd_s("eager") * eager.efficiency == pytest.approx(1.388e-3, rel=1e-3)
    assert fwd_s("eager") == pytest.approx(3.367e-3, rel=1e-3)
    assert ops.MATH_ATTENTION["compile"] == eager
