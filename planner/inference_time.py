"""One tower's forward at inference, priced by the training time model's own per-operation functions
(planner/ops.py): the same GEMM rooflines at the same achieved rates, the same attention kernels,
the same memory-bound bytes per token by software stack, the same host time per kernel by stack, the
same precision handling and the same compute scale (hw.compute_scale: a calibration's, or the one
`evaplan validate` fits on the published runs). Only what inference does not run is left out: no
backward, no recompute, no optimizer, no CLIP loss, no patch dropout or drop path (eval mode).

Megatron-style tensor parallelism splits every GEMM of a block (column-parallel q/k/v and MLP
inputs, row-parallel outputs) and the attention heads over `tp` ranks; its all-reduces are priced
here with the collectives model (planner/comm.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from planner import compute, ops
from planner.comm import bus_bandwidth_bytes_per_s, ring_latency_s
from planner.errors import InfeasibleError
from planner.memory import TowerShape
from planner.spec import HardwareSpec, ModelSpec

Tower = Literal["image", "text"]

# Attention runs on 16-bit q, k, v at every serving precision (fp8/int8 quantise the GEMMs only).
ATTENTION_PRECISION = {"fp8": "bf16", "int8": "bf16"}
# Tensor-parallel all-reduces per transformer block in a Megatron-style split: one after the
# attention out-projection, one after the MLP down-projection (arXiv 1909.08053 §3).
TP_ALLREDUCES_PER_BLOCK = 2
# Bytes per activation element: 16-bit at every serving precision (planner/ops.py ACT_BYTES), the
# values the TP all-reduces carry and planner/serve.py's activation memory counts.
ACTIVATION_BYTES = ops.ACT_BYTES["bf16"]


@dataclass(frozen=True)
class BatchTime:
    """One batch through one tower on one replica (the TP ranks work in parallel), by kind of work."""

    flops: float  # the whole batch (FlopCounterMode's count)
    gemm_s: float
    attention_s: float
    memory_s: float
    device_s: float
    kernels: float
    host_s: float
    tp_comm_s: float
    total_s: float  # device and host overlapped (GPU) or added (CPU): ops.overlap_host, + TP comm


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


def peak_flops(hw: HardwareSpec, precision: str) -> float:
    """Dense tensor-core peak for the precision. int8 uses the fp8 figure: the datasheets give the
    same dense rate for INT8 TOPS and FP8 TFLOPS on Hopper (H100/H200 1,979), Blackwell (B200 4,500)
    and CDNA3 (MI300X/MI325X 2,615)."""
    if precision == "bf16":
        return hw.bf16_dense_tflops.value * 1e12
    if hw.fp8_dense_tflops is None:
        raise InfeasibleError(
            f"{hw.name} has no {precision} tensor-core rate in its profile (fp8_dense_tflops)",
            hint="use --precision bf16, or hardware with fp8 (h100-sxm, h200, b200, mi300x, mi325x)",
        )
    return hw.fp8_dense_tflops.value * 1e12


def inference_flops_per_sample(model: ModelSpec, tower: Tower) -> float:
    """Forward FLOPs of one image (at the model's resolution, no patch dropout) or one text."""
    f = compute.forward_flops_per_sample(model, model.vision.image_size, 0.0)
    return float(f.vision if tower == "image" else f.text)


def tokens(model: ModelSpec, tower: Tower) -> int:
    """Tokens through the blocks: CLS + all patches, or the text context length."""
    return model.vision.seq_len if tower == "image" else model.text.context_length


def _tp_comm_s(hw: HardwareSpec, shape: TowerShape, rows: float, tp: int) -> float:
    """The TP all-reduces of one batch: per block, TP_ALLREDUCES_PER_BLOCK of rows × width values,
    each ring latency + bytes over the profile's all-reduce busbw."""
    if tp <= 1:
        return 0.0
    lat = float(
        ring_latency_s(
            "all_reduce",
            tp,
            hw.gpus_per_node,
            hw.collective.alpha_intra_us.value,
            hw.collective.alpha_inter_us.value,
        )
    )
    busbw = float(bus_bandwidth_bytes_per_s("all_reduce", tp, hw))
    per_call = lat + 2.0 * (tp - 1) / tp * rows * shape.width * ACTIVATION_BYTES / busbw
    return shape.layers * TP_ALLREDUCES_PER_BLOCK * per_call


def inference_batch_time_s(
    model: ModelSpec,
    hw: HardwareSpec,
    tower: Tower,
    batch: int,
    precision: str,
    tp: int = 1,
    stack: str = "eager",
    attention: str = "flash",
) -> BatchTime:
    """Time of one batch of `batch` images (tower "image") or texts ("text") at the model's own
    resolution and context length: the one place serving asks the time model.

    The device and host time are training's per-operation model, forward only (planner/ops.py's
    functions: GEMM rooflines with the weights at the serving precision, attention by kernel,
    memory-bound bytes by stack, host time per kernel by stack, the compute scale of `hw`). A
    profile's `mfu_default` (user override) replaces the device time by forward FLOPs at that flat
    MFU, as in training. Tensor parallelism adds 2 all-reduces per block of batch × tokens × width
    16-bit values (ring latency + bytes over the profile's all-reduce busbw), after the device work
    they follow.
    """
    peak_flops(hw, precision)  # refuses a precision the hardware has no rate for (serve's hint)
    scale = ops.compute_scale_of(hw)
    a = ops.ACT_BYTES[precision]
    t = float(tp)
    image = tower == "image"
    shape = compute.vision_shape(model) if image else compute.text_shape(model)
    seq = float(tokens(model, tower))
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
    flops = batch * inference_flops_per_sample(model, tower)
    if hw.mfu_default is not None:
        device = flops / t / (ops.peak_tflops(hw, precision) * 1e12 * hw.mfu_default.value * scale)

    kernels = shape.layers * float(ops.block_kernel_count(shape, ew, 1.0, backward=False))
    kernels += ops.FORWARD_STEM_KERNELS
    host = float(ops.host_term(kernels, ops.HOST_S_PER_KERNEL[stack]).value)
    busy = float(ops.overlap_host(hw, device, host))
    tp_comm_s = _tp_comm_s(hw, shape, rows, tp)
    return BatchTime(flops, gemm, attn, memory, device, kernels, host, tp_comm_s, busy + tp_comm_s)
