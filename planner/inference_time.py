"""One tower's forward at inference, priced by the training time model's own per-operation functions
(planner/ops.py): the same GEMM rooflines at the same achieved rates, the same attention kernels,
the same memory-bound bytes per token by software stack, the same host time per kernel by stack, the
same precision handling and the same compute scale (hw.compute_scale: a calibration's, or the one
`evaplan validate` fits on the published runs). Only what inference does not run is left out: no
backward, no recompute, no optimizer, no CLIP loss, no patch dropout or drop path (eval mode).

Megatron-style tensor parallelism splits every GEMM of a block (column-parallel q/k/v and MLP
inputs, row-parallel outputs) and the attention heads over `tp` ranks; its all-reduces are priced by
planner/serve.py with the collectives model.
"""

from __future__ import annotations

from dataclasses import dataclass

from planner import compute, ops
from planner.memory import TowerShape
from planner.spec import HardwareSpec, ModelSpec

# Attention runs on 16-bit q, k, v at every serving precision (fp8/int8 quantise the GEMMs only).
ATTENTION_PRECISION = {"fp8": "bf16", "int8": "bf16"}


@dataclass(frozen=True)
class ForwardTime:
    """One batch through one tower on one TP rank, by kind of work (seconds)."""

    gemm_s: float
    attention_s: float
    memory_s: float
    device_s: float
    kernels: float
    host_s: float
    busy_s: float  # device and host overlapped (GPU) or added (CPU): ops.overlap_host


def _block_gemms_s(
    hw: HardwareSpec, shape: TowerShape, rows: float, tp: float, precision: str, scale: float
) -> float:
    """The GEMMs of one block's forward, split over TP (ops.gemm_time_s each)."""
    h, f = float(shape.width), float(shape.mlp_hidden)
    if shape.subln:  # separate q, k, v
        qkv = 3.0 * ops.gemm_time_s(hw, rows, h / tp, h, precision, scale)
    else:
        qkv = ops.gemm_time_s(hw, rows, 3.0 * h / tp, h, precision, scale)
    proj = ops.gemm_time_s(hw, rows, h, h / tp, precision, scale)
    mlp_in = (2.0 if shape.swiglu else 1.0) * ops.gemm_time_s(hw, rows, f / tp, h, precision, scale)
    mlp_out = ops.gemm_time_s(hw, rows, h, f / tp, precision, scale)
    return float(qkv + proj + mlp_in + mlp_out)


def tower_forward_time(
    model: ModelSpec,
    hw: HardwareSpec,
    tower: str,
    batch: int,
    *,
    precision: str,
    tp: int = 1,
    stack: str = "eager",
    attention: str = "flash",
) -> ForwardTime:
    """Forward of `batch` images (tower "image") or texts ("text") at the model's own resolution and
    context length. A profile's `mfu_default` (user override) replaces the device time by forward
    FLOPs at that flat MFU, as in training."""
    ops.peak_tflops(hw, precision)  # refuses a precision the hardware has no rate for
    scale = hw.compute_scale.value if hw.compute_scale is not None else 1.0
    a = ops.ACT_BYTES[precision]
    t = float(tp)
    image = tower == "image"
    shape = compute.vision_shape(model) if image else compute.text_shape(model)
    seq = float(model.vision.seq_len if image else model.text.context_length)
    rows = batch * seq
    h, e = float(shape.width), float(model.embed_dim)

    gemm = shape.layers * _block_gemms_s(hw, shape, rows, t, precision, scale)
    if image:
        v = model.vision
        patches = float(v.num_patches)
        gemm += float(ops.gemm_time_s(hw, batch * patches, h, 3.0 * v.patch_size**2, precision, scale))
        stem = ops.vision_stem_bytes(model, batch, patches, rows, 0.0, a)
        # eval mode: no drop path; RoPE rotates the patch tokens
        ew = ops.block_elementwise(
            shape, v.norm, stack, "bf16", False, rope_tokens_share=(seq - 1.0) / seq, qkv_bias=v.qkv_bias
        )
        heads, head_dim, causal = v.heads, v.head_width, False
    else:
        stem = ops.text_stem_bytes(model, rows, a)
        ew = ops.text_block_elementwise(model, stack, "bf16")
        heads, head_dim, causal = model.text.heads, model.text.head_width, True
    gemm += float(ops.gemm_time_s(hw, batch, e, h, precision, scale))  # head / text projection

    attn_precision = ATTENTION_PRECISION.get(precision, precision)
    attn = shape.layers * float(
        ops.attention_time_s(
            hw, attention, rows, seq, heads / t, head_dim, 1.0, causal, attn_precision, scale, stack, False
        )
    )
    memory = float(shape.layers * rows * ew.fwd_bytes_per_token + stem) / (ops.hbm_bytes_per_s(hw) * scale)
    device = gemm + attn + memory
    if hw.mfu_default is not None:
        f = compute.forward_flops_per_sample(model, model.vision.image_size, 0.0)
        flops = batch * float(f.vision if image else f.text)
        device = flops / t / (ops.peak_tflops(hw, precision) * 1e12 * hw.mfu_default.value * scale)

    kernels = shape.layers * float(ops.block_kernel_count(shape, ew, 1.0, backward=False))
    kernels += ops.FORWARD_STEM_KERNELS
    host = float(ops.host_term(kernels, ops.HOST_S_PER_KERNEL[stack]).value)
    busy = float(ops.overlap_host(hw, device, host))
    return ForwardTime(gemm, attn, memory, device, kernels, host, busy)
