"""Time of one training micro-batch, operation by operation, instead of FLOPs at a flat MFU.

Every transformer block (and the patch embedding, heads and CLIP loss) is broken into what a GPU
executes, each priced by what limits it (docs/planner-model.md derives every term):

- GEMMs at their own shape (M rows = micro-batch × tokens, N, K from the widths), forward plus the
  two backward GEMMs of each weight (input gradient and weight gradient) plus the recomputed forward
  under activation checkpointing. Time = max(FLOPs / achieved rate, bytes / achieved HBM bandwidth)
  (a roofline). The achieved rate is the hardware's measured maximum achievable matmul rate (the
  profile's `matmul.tflops`, measured at `matmul.m × n × k`) scaled by how well a shape keeps the
  SMs/CUs busy (`gemm_utilisation`: work balance over the units and each tile's pipeline fill),
  relative to the measured shape. The rate rises monotonically with M, N and K and never exceeds
  the datasheet peak.
- Attention by kernel (`flash`, `cudnn`, `mem_efficient`, `math`, `explicit`), forward and backward at the
  kernel's own rate by head dimension and sequence length, also bounded by HBM traffic (short
  sequences are memory-bound); `math` (SDPA's math backend) and `explicit` (attention written out as
  q @ kᵀ, softmax, @ v in the model's code) materialise the score matrix and pay for it in bytes.
- Memory-bound work by bytes over the achieved HBM bandwidth: norms, activation functions, residual
  adds, RoPE, layout copies, patch-dropout gather, the CLIP loss, and (per step) the optimizer, the
  gradient clipping and the fp16 overflow check. How many bytes an elementwise chain moves depends on
  the software stack: eager PyTorch runs one kernel per op, `torch.compile` and fused (Transformer
  Engine / NeMo) stacks fuse chains between GEMMs into one kernel each.
- Host time: eager PyTorch issues every kernel from Python; a micro-batch takes
  max(device time, kernels × host time per kernel) on a GPU (the host runs ahead of the device
  asynchronously), and their sum on a CPU (the same cores do both).

Every function works on floats and on numpy arrays alike (one value per candidate plan), with the same
operations in the same order, so the vectorised search agrees to the byte with `estimate()`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, get_args

import numpy as np

from planner.compute import text_shape, vision_shape
from planner.errors import InfeasibleError
from planner.memory import SCORE_MATRIX_KERNELS, TowerShape, math_path, vision_tokens
from planner.params import param_tensors
from planner.spec import AttentionKernel, HardwareSpec, ModelSpec, OptimizerImpl, Stack, optimizer_impl_unread
from planner.terms import Term, compose, sum_term

Num = Any
STACKS: tuple[str, ...] = get_args(Stack)
ATTENTION_KERNELS: tuple[str, ...] = get_args(AttentionKernel)
OPTIMIZER_IMPLS: tuple[str, ...] = get_args(OptimizerImpl)

# ----------------------------------------------------------------------------------- precision
# Bytes of one activation element: bf16/fp16 2, fp32 4. fp8 and int8 (serving) keep 16-bit activations:
# their GEMMs quantise the inputs on the fly (Transformer Engine / torchao dynamic quantisation) and
# write 16-bit outputs.
ACT_BYTES = {"bf16": 2.0, "fp16": 2.0, "fp32": 4.0, "fp8": 2.0, "int8": 2.0}
# Bytes of one stored weight: the activation width in training; fp8 (E4M3) and int8 weights 1 byte
# (per-channel scales, one per output row, are negligible).
WEIGHT_BYTES = {"bf16": 2.0, "fp16": 2.0, "fp32": 4.0, "fp8": 1.0, "int8": 1.0}


def peak_tflops(hw: HardwareSpec, precision: str) -> float:
    """The dense tensor-core peak the precision runs at: bf16 and fp16 share one figure on every
    bundled GPU (NVIDIA and AMD datasheets list the same dense FP16 and BF16 rate); fp32 training
    runs its matmuls as TF32 (open_clip and EVA enable `torch.backends.cuda.matmul.allow_tf32`);
    int8 runs at the fp8 figure (the datasheets give the same dense INT8 TOPS and FP8 TFLOPS on
    Hopper, Blackwell and CDNA3)."""
    if precision == "fp32":
        if hw.tf32_dense_tflops is None:
            raise InfeasibleError(
                f"hardware profile {hw.name} has no tf32_dense_tflops for fp32 training",
                hint="add tf32_dense_tflops (with its source) to the profile, or use --precision bf16",
            )
        return hw.tf32_dense_tflops.value
    if precision in ("fp8", "int8"):
        if hw.fp8_dense_tflops is None:
            raise InfeasibleError(
                f"{hw.name} has no {precision} tensor-core rate in its profile (fp8_dense_tflops)",
                hint="use --precision bf16, or hardware with fp8 (h100-sxm, h200, b200, mi300x, mi325x)",
            )
        return hw.fp8_dense_tflops.value
    return hw.bf16_dense_tflops.value


def matmul_tflops(hw: HardwareSpec, precision: str) -> float:
    """Maximum achievable matmul rate at the precision: the measured bf16 MAMF, scaled by the ratio of
    peaks for TF32, fp8 and int8 (evaplan assumption: the same share of peak is reachable)."""
    return hw.matmul.tflops.value * peak_tflops(hw, precision) / hw.bf16_dense_tflops.value


# ----------------------------------------------------------------------------------- GEMM
# Work split: libraries split a GEMM's output into tiles and (split-K / stream-K) each tile's K loop
# into chunks of one pipeline stage, so the units balance over T·K/BK pieces of work. CUTLASS's SM80
# tensor-op default (default_gemm_configuration.h) iterates K in steps of BK = 64.
GEMM_K_STEP = 64.0


def gemm_utilisation(hw: HardwareSpec, m: Num, n: Num, k: Num) -> Num:
    """Share of the units' time a GEMM keeps busy, as a smooth function of its shape:

    - balance: W = (M·N / tile area) · K / BK pieces of work over U units, the last wave on average
      half empty: W / (W + U/2);
    - pipeline: every output tile pays a prologue/epilogue worth `k_overhead` of K (the pipeline
      fill, kStages × BK): K / (K + k_overhead).
    Both rise monotonically with M, N and K towards 1."""
    mm = hw.matmul
    work = m * n / (mm.tile_m * mm.tile_n) * (k / GEMM_K_STEP)
    balance = work / (work + mm.compute_units.value / 2.0)
    return balance * (k / (k + mm.k_overhead))


def gemm_rate_flops(hw: HardwareSpec, m: Num, n: Num, k: Num, precision: str = "bf16") -> Num:
    """Achieved FLOP/s of a compute-bound GEMM: the measured MAMF × utilisation(shape) /
    utilisation(measured shape), at most the datasheet peak."""
    mm = hw.matmul
    ref = gemm_utilisation(hw, float(mm.m), float(mm.n), float(mm.k))
    rate = matmul_tflops(hw, precision) * 1e12 / ref * gemm_utilisation(hw, m, n, k)
    return np.minimum(rate, peak_tflops(hw, precision) * 1e12)


def hbm_bytes_per_s(hw: HardwareSpec) -> float:
    return hw.hbm_achieved_tbps.value * 1e12


def compute_scale_of(hw: HardwareSpec) -> float:
    """The multiplier on every modelled device rate: a calibration's or the published runs' fitted
    compute_scale, 1 for the profile as shipped without one."""
    return hw.compute_scale.value if hw.compute_scale is not None else 1.0


def gemm_time_s(hw: HardwareSpec, m: Num, n: Num, k: Num, precision: str = "bf16", scale: float = 1.0) -> Num:
    """One GEMM (M × K activations) · (K × N weights): max(2MNK / rate, bytes of A, B and C / HBM
    bandwidth), the weights at the precision's stored width (1 byte for fp8/int8 serving), the compute
    part divided by `scale` (a calibration's compute_scale)."""
    a, w = ACT_BYTES[precision], WEIGHT_BYTES[precision]
    flops = 2.0 * m * n * k
    t_compute = flops / (gemm_rate_flops(hw, m, n, k, precision) * scale)
    t_memory = (a * (m * k + m * n) + w * k * n) / (hbm_bytes_per_s(hw) * scale)
    return np.maximum(t_compute, t_memory)


def linear_train_time_s(
    hw: HardwareSpec,
    m: Num,
    n: Num,
    k: Num,
    passes: Num,
    precision: str,
    scale: float,
    weight_grad: Num = True,
) -> Num:
    """A Linear layer of K → N on M rows through one training micro-batch: `passes` forwards (1, or 2
    with recompute), the input-gradient GEMM (M × N)·(N × K) and the weight-gradient GEMM
    (N × M)·(M × K) (an N × K output reduced over M). `weight_grad` False drops the input gradient
    instead (the patch embedding has no input to differentiate)."""
    fwd = gemm_time_s(hw, m, n, k, precision, scale)
    dgrad = gemm_time_s(hw, m, k, n, precision, scale)
    wgrad = gemm_time_s(hw, n, k, m, precision, scale)
    return passes * fwd + np.where(weight_grad, dgrad, 0.0) + wgrad


# ----------------------------------------------------------------------------------- attention
# The hardware profile holds measured forward rates of the fused kernels at one shape
# (`attention.flash_fwd_tflops` at `attention.seq`, `attention.head_dim`). Other shapes scale by:
# - sequence: FlashAttention tiles queries in blocks of 128 rows (FA2 §3.3, Br = 128 for head dim
#   ≤ 128) and a sequence fills its last block half on average: s / (s + 64);
# - head dimension: the softmax and rescaling work per tile does not shrink with d (FA2 §3.1), so
#   small heads run slower per FLOP. evaplan assumption: d / (d + 32) (head dim 64 at 83 % of 128's
#   rate, as FA2 §4.1's figures show 64 below 128).
ATTN_QUERY_BLOCK = 128.0
ATTN_HEAD_DIM_OVERHEAD = 32.0
# Backward rate against forward: FlashAttention-2 on A100 reaches up to 73 % of peak forward and
# 63 % backward (Dao, arXiv 2307.08691, §4.1).
FLASH_BWD_OVER_FWD = 0.63 / 0.73
# Unmeasured kernels: the memory-efficient (xformers/CUTLASS) kernel at half of FlashAttention-2
# (arXiv 2307.08691 Fig. 4-6: FA2 about 2x the xformers kernel); cuDNN's fused kernel as flash.
MEM_EFFICIENT_OVER_FLASH = 0.5
# Backward FLOPs of a fused kernel: it recomputes QKᵀ and the softmax, 5 matmuls against the
# forward's 2 (FA2 §3.1.2), so 2.5× the forward FLOPs; `math` keeps the scores: 2×.
FUSED_BWD_FLOPS_RATIO = 2.5


def _attn_shape(seq: Num, head_dim: float) -> Num:
    return seq / (seq + ATTN_QUERY_BLOCK / 2.0) * (head_dim / (head_dim + ATTN_HEAD_DIM_OVERHEAD))


def attention_refusal(hw: HardwareSpec, kernel: str) -> InfeasibleError | None:
    """Why this hardware cannot run the attention kernel at all (None: it can). cuDNN is NVIDIA's
    library; torch SDPA has no cuDNN backend on ROCm or the CPU."""
    if kernel == "cudnn" and hw.vendor != "nvidia":
        return InfeasibleError(
            f"attention kernel 'cudnn' runs on NVIDIA GPUs only, and {hw.name} is {hw.vendor}",
            hint="use --attention flash (on ROCm: CK or Triton FlashAttention), mem_efficient or math",
        )
    return None


def attention_fwd_rate_flops(hw: HardwareSpec, kernel: str, seq: Num, head_dim: int, precision: str) -> Num:
    """Forward FLOP/s of a fused attention kernel: the profile's measured rate scaled from its shape
    to this one (and by the precision's peak), at most the peak."""
    at = hw.attention
    flash = at.flash_fwd_tflops.value
    measured = {
        "flash": flash,
        "cudnn": at.cudnn_fwd_tflops.value if at.cudnn_fwd_tflops is not None else flash,
        "mem_efficient": at.mem_efficient_fwd_tflops.value
        if at.mem_efficient_fwd_tflops is not None
        else MEM_EFFICIENT_OVER_FLASH * flash,
    }
    if kernel not in measured:
        raise InfeasibleError(
            f"unknown attention kernel '{kernel}'", hint=f"use one of: {', '.join(ATTENTION_KERNELS)}"
        )
    refusal = attention_refusal(hw, kernel)
    if refusal is not None:
        raise refusal
    shape = _attn_shape(seq, float(head_dim)) / _attn_shape(float(at.seq), float(at.head_dim))
    peak = peak_tflops(hw, precision)
    rate = measured[kernel] * 1e12 * shape * peak / hw.bf16_dense_tflops.value
    return np.minimum(rate, peak * 1e12)


@dataclass(frozen=True)
class MathAttention:
    """What the unfused (math) attention path moves per score (one element of the batch × heads × s × s
    score matrix), besides the score GEMMs' FLOPs: the bytes of one score as the GEMMs write and read it
    (QKᵀ's output, the probabilities AV reads, and in backward dP written, P and dS read by the dV, dQ,
    dK GEMMs), and the memory-bound passes between the GEMMs, forward and backward (read + write bytes
    per score; `causal_fwd_bytes` the mask a causal tower adds)."""

    gemm_score_bytes: float
    fwd_bytes: float
    bwd_bytes: float
    causal_fwd_bytes: float
    efficiency: float = 1.0  # the measured share of this roofline the stack's math path achieves


# By unfused path (planner/memory.py math_path: which one a kernel takes on a stack; MATH_SCORE_BYTES
# keeps the same sources):
# - sdpa_math: PyTorch ≥ 2.5 SDPA math (aten `_scaled_dot_product_attention_math`) upcasts 16-bit
#   q, k, v to fp32, so the scores are 4 bytes; forward `_safe_softmax`: softmax (read 4, write 4), the
#   fully-masked-row test eq(−inf) (read 4, write 1) and its all() (read 1), where() (read 4, write 4):
#   22; causal: the −inf bias add (read 4, write 4): 8; backward: where's gradient (read 4 + 1, write 4)
#   and softmax backward (read 4 + 4, write 4): 21.
# - autocast: nn.MultiheadAttention's math under torch.autocast (PyTorch 1.x F.multi_head_attention_forward:
#   bmm in fp16, softmax in fp32 by autocast's op list, bmm in fp16): forward cast to fp32 (read 2,
#   write 4), softmax (read 4, write 4), cast back for the AV bmm (read 4, write 2): 20; causal: the mask
#   add in fp16 before the softmax (read 2, write 2): 4; backward the two casts' gradients (read 2,
#   write 4; read 4, write 2) and softmax backward (read 4 + 4, write 4): 24; scores 2 bytes.
# - fused_softmax (Megatron/NeMo FusedScaleMaskSoftmax): scale, mask and softmax in one 16-bit kernel
#   (read 2, write 2), its backward (read 2 + 2, write 2): 4 and 6; scores 2 bytes.
# - explicit_16bit (timm 0.6 `attn = (q @ k.transpose(-2, -1)) * self.scale; attn = attn.softmax(dim=-1)`
#   on a `.half()` model, https://github.com/huggingface/pytorch-image-models/blob/v0.6.7/timm/models/
#   vision_transformer.py, Attention.forward; ViT-pytorch's Attention the same with a division): the scale
#   multiply (read 2, write 2) and the softmax (read 2, write 2): 8; causal: a 16-bit mask add (read 2,
#   write 2): 4; backward: softmax backward (read 2 + 2, write 2) and the multiply's (read 2, write 2):
#   10; scores 2 bytes.
# Efficiency: PyTorch SDPA's math forward was measured at 3.367 ms for the EVA02-B/16 vision attention
# at micro-batch 256 (256 × 12 heads × 197 tokens × head dim 64, bf16, one H100 SXM;
# benchmarks/results/sdpa-backends-h100.log, torch 2.11.0+cu130, 2026-11-27), where the roofline above
# gives 1.388 ms: 0.412 (tests/planner/test_attention_public.py recomputes it). The share is not the
# upcast's fp32 GEMMs: at the H100's FP32 (non-tensor) peak, 67 TFLOPS (NVIDIA H100 datasheet,
# https://www.nvidia.com/en-us/data-center/h100/, read 2026-12-07), QKᵀ and AV take 0.456 ms where the
# roofline already charges their bytes 0.451 ms (at the MAMF share of peak, 794.5 / 989, 0.57 ms: at most
# 0.12 ms of the 1.98 ms the roofline misses; the test recomputes both). What is left is what every
# unfused path over a CLIP score matrix shares: separate kernels each taking the s × s scores through HBM
# (PyTorch's warp softmax, `softmax_warp_forward` / `_backward` in aten/src/ATen/native/cuda/
# PersistentSoftmax.cuh for rows of at most 1024, in 1.10 as in 2.x; the elementwise casts), on rows of
# s = 1 + grid² tokens (50, 197, 257, 577: odd), so the batched score GEMMs have a leading dimension that
# is not a multiple of 8 and each score row starts off a 16-byte boundary, where cuBLAS's tensor-core
# kernels lose efficiency (cuBLAS documentation, "Tensor Core Usage": best performance when m, n, k and
# lda, ldb, ldc are multiples of 8 for 16-bit types and the pointers 16-byte aligned,
# https://docs.nvidia.com/cuda/cublas/index.html#tensor-core-usage, read 2026-12-07; NVIDIA Matrix
# Multiplication Background User's Guide §2.2, https://docs.nvidia.com/deeplearning/performance/
# dl-performance-matrix-multiplication/index.html, February 2023). So the amp path (PyTorch 1.x
# nn.MultiheadAttention under autocast, as OpenCLIP and Chinese-CLIP train) and the explicit 16-bit path
# (timm 0.6 / ViT-pytorch on a `.half()` model) — the same softmax kernel family, fp16 bmm on the same
# odd rows — run at the same measured share (evaplan assumption: the share
# of each GPU's achieved bandwidth carries from H100 to A100, as the TF32 rate's share of peak does in
# matmul_tflops). Checked, not fitted, against Chinese-CLIP's 8 × A100 batch times with and without
# FlashAttention (tests/planner/test_attention_public.py: the predicted math-minus-flash time is 73–91 %
# of the measured, 26–33 % at the roofline). The fused path (Megatron/NeMo FusedScaleMaskSoftmax: one
# kernel from the fp16 scores to the probabilities) has no kernel-level measurement and stays at the
# roofline.
SDPA_MATH_EFFICIENCY = 1.388 / 3.367
MATH_ATTENTION = {
    "sdpa_math": MathAttention(4.0, 22.0, 21.0, 8.0, SDPA_MATH_EFFICIENCY),
    "autocast": MathAttention(2.0, 20.0, 24.0, 4.0, SDPA_MATH_EFFICIENCY),
    "fused_softmax": MathAttention(2.0, 4.0, 6.0, 0.0),
    "explicit_16bit": MathAttention(2.0, 8.0, 10.0, 4.0, SDPA_MATH_EFFICIENCY),
}


def _score_gemm_s(
    hw: HardwareSpec, m: Num, n: Num, k: Num, score_bytes: float, precision: str, scale: float
) -> Num:
    """One batched score GEMM as a roofline: FLOPs at the precision's achieved rate, bytes of A, B and
    C at the math path's score dtype."""
    t_compute = 2.0 * m * n * k / (gemm_rate_flops(hw, m, n, k, precision) * scale)
    return np.maximum(t_compute, score_bytes * (m * k + k * n + m * n) / (hbm_bytes_per_s(hw) * scale))


def math_attention_time_s(
    hw: HardwareSpec,
    path: str,
    seqs: Num,
    seq: Num,
    heads: float,
    head_dim: int,
    passes: Num,
    causal: bool,
    precision: str,
    scale: float,
    backward: bool = True,
) -> Num:
    """The math path through `passes` forwards and (with `backward`) one backward: the QKᵀ and AV
    GEMMs (s × d)·(d × s) and (s × s)·(s × d) per head, stacked as seqs·heads·s rows, and in backward
    the four GEMMs dV, dP, dQ, dK (twice the forward's), each a roofline at the stack's score bytes;
    plus the memory-bound passes over the score matrix (MATH_ATTENTION[path], path from
    planner/memory.py math_path); all of it at the path's measured share of that roofline
    (MathAttention.efficiency)."""
    ma = MATH_ATTENTION[path]
    bw = hbm_bytes_per_s(hw) * scale
    m = seqs * heads * seq
    qk = _score_gemm_s(hw, m, seq, head_dim, ma.gemm_score_bytes, precision, scale)
    av = _score_gemm_s(hw, m, head_dim, seq, ma.gemm_score_bytes, precision, scale)
    scores = seqs * heads * seq * seq
    fwd = (qk + av + scores * (ma.fwd_bytes + (ma.causal_fwd_bytes if causal else 0.0)) / bw) / ma.efficiency
    if not backward:
        return passes * fwd
    bwd = (2.0 * (qk + av) + scores * ma.bwd_bytes / bw) / ma.efficiency
    return passes * fwd + bwd


def attention_time_s(
    hw: HardwareSpec,
    kernel: str,
    rows: Num,
    seq: Num,
    heads: int,
    head_dim: int,
    passes: Num,
    causal: bool,
    precision: str,
    scale: float,
    stack: str = "eager",
    backward: bool = True,
) -> Num:
    """Attention of `rows / seq` sequences of length `seq` with `heads` heads of `head_dim`, through
    `passes` forwards and (with `backward`; not at inference) one backward. A causal fused kernel skips
    the masked half of the scores; the score-matrix kernels (math, explicit: math_attention_time_s)
    compute them all."""
    a = ACT_BYTES[precision]
    bw = hbm_bytes_per_s(hw) * scale
    seqs = rows / seq
    if kernel in SCORE_MATRIX_KERNELS:
        path = math_path(kernel, stack)
        return math_attention_time_s(
            hw, path, seqs, seq, heads, head_dim, passes, causal, precision, scale, backward
        )
    # QKᵀ and AV: 2 · 2·s²·d per head.
    fwd_flops = seqs * heads * 4.0 * seq * seq * head_dim
    executed = 0.5 if causal else 1.0
    rate_fwd = attention_fwd_rate_flops(hw, kernel, seq, head_dim, precision) * scale
    rate_bwd = rate_fwd * FLASH_BWD_OVER_FWD
    # HBM traffic: forward reads Q, K, V and writes O; backward reads Q, K, V, O, dO, writes dQ, dK, dV.
    tensor = seqs * heads * seq * head_dim * a
    fwd = np.maximum(executed * fwd_flops / rate_fwd, 4.0 * tensor / bw)
    if not backward:
        return passes * fwd
    bwd = np.maximum(executed * FUSED_BWD_FLOPS_RATIO * fwd_flops / rate_bwd, 8.0 * tensor / bw)
    return passes * fwd + bwd


# ----------------------------------------------------------------------------------- elementwise
@dataclass(frozen=True)
class ElementwiseCost:
    """Bytes per token and kernels per block of the memory-bound ops between the GEMMs, forward
    (repeated by a recompute) and backward apart. Kernels count the memory-bound ops only."""

    fwd_bytes_per_token: float
    bwd_bytes_per_token: float
    fwd_kernels: float
    bwd_kernels: float
    # The end of the forward a recompute skips: non-reentrant checkpointing stops as soon as every
    # tensor backward needs is back (torch.utils.checkpoint's early stop), i.e. before the last
    # Linear's GEMM, drop path and the residual add, whose outputs backward does not read.
    tail_bytes_per_token: float = 0.0
    tail_kernels: float = 0.0

    def recompute_bytes_per_token(self) -> float:
        return self.fwd_bytes_per_token - self.tail_bytes_per_token

    @property
    def bytes_per_token(self) -> float:
        """Forward bytes per token (one pass)."""
        return self.fwd_bytes_per_token

    @property
    def kernels(self) -> float:
        """Forward kernels (one pass)."""
        return self.fwd_kernels


class _Ops:
    """Running sum of forward and backward (bytes per token, kernels) of a block's ops."""

    def __init__(self) -> None:
        self.fb = self.bb = self.fk = self.bk = 0.0

    # New objects, never `+=`: with numpy arrays an in-place add would change a total saved earlier.
    def fwd(self, nbytes: Num, kernels: float = 1.0) -> None:
        self.fb = self.fb + nbytes
        self.fk = self.fk + kernels

    def bwd(self, nbytes: Num, kernels: float = 1.0) -> None:
        self.bb = self.bb + nbytes
        self.bk = self.bk + kernels


# LayerNorm keeps the mean and reciprocal standard deviation of every row in fp32 for backward
# (native_layer_norm's second and third outputs): 8 bytes per token written forward, read backward.
NORM_STATS_BYTES = 8.0
F32 = 4.0


class _EagerBlock(_Ops):
    """One pre-norm block under eager PyTorch, ATen op by ATen op, as evaclip/op_census.py records them
    for evaclip/model.py (tests/planner/test_op_census.py checks every total). h width, f MLP hidden,
    a bytes of a 16-bit (or fp32) activation, n = h × the share of tokens RoPE rotates (the patch
    tokens, not CLS). Under `amp` (torch.autocast, fp32 weights) every Linear casts its input to 16
    bits (autocast caches only the weights' casts), LayerNorm runs in fp32 (CUDA's autocast fp32
    list) after casting a 16-bit input up, the vision residual stream stays 16-bit (the trainer casts
    the CLS and position embeddings to the patch embedding's dtype) and the text stream is fp32 (the
    token embedding is): its residual adds read 4 + a and write 4. Every cast's backward casts the
    gradient back; gradients meeting in an fp32 tensor are summed in fp32."""

    def __init__(self, t: TowerShape, norm: str, amp: bool, a: float, text: bool) -> None:
        super().__init__()
        self.t, self.norm, self.amp, self.a, self.text = t, norm, amp, a, text
        self.h, self.f = float(t.width), float(t.mlp_hidden)
        self.stream = F32 if (amp and text) else a  # bytes of the residual stream

    def norm_op(self, dim: float, x_bytes: float) -> float:
        """A norm over `dim` of an input of `x_bytes`; returns its output's bytes."""
        a = self.a
        if self.norm == "rmsnorm":
            # evaclip RMSNorm in eager ops (x.float(), pow, mean, + eps, rsqrt, x · r, .to(dtype),
            # · weight), per element of `dim` as the op census of the module records it (bf16 input):
            # forward 28 + 4a bytes in 8 ops, backward (autograd through every op, in fp32) 84 + 4a
            # bytes in 16 ops; under autocast the weight product promotes to fp32 (forward + 2,
            # output fp32) and the backward adds a cast (+ 16 bytes, 17 ops).
            if self.amp:
                self.fwd((30.0 + 4.0 * a) * dim, 8.0)
                self.bwd((100.0 + 4.0 * a) * dim, 17.0)
                return F32
            self.fwd((28.0 + 4.0 * a) * dim, 8.0)
            self.bwd((84.0 + 4.0 * a) * dim, 16.0)
            return a
        y = a
        if self.amp:  # layer_norm in fp32: cast a 16-bit input up, forward and (the gradient) backward
            if x_bytes != F32:
                self.fwd((x_bytes + F32) * dim)
                self.bwd((F32 + x_bytes) * dim)
            y = F32
        self.fwd(2.0 * y * dim + NORM_STATS_BYTES)
        self.bwd(3.0 * y * dim + NORM_STATS_BYTES)
        return y

    def linear_inputs(self, dim: float, consumers: float, x_bytes: float) -> None:
        """`consumers` Linears read one tensor of `dim`: under autocast an fp32 input is cast for each
        (and each gradient cast back); the consumers' input gradients are summed in the input's dtype."""
        a = self.a
        if self.amp and x_bytes == F32:
            self.fwd(consumers * (F32 + a) * dim, consumers)
            self.bwd(consumers * (a + F32) * dim, consumers)
        self.bwd((consumers - 1.0) * 3.0 * x_bytes * dim, consumers - 1.0)

    def bias_grads(self, width: float) -> None:
        """Bias gradients: one row reduction per bias over the output gradient (read a per element)."""
        self.bwd(self.a * width, 1.0)

    def residual_add(self) -> None:
        """stream + the 16-bit branch output; backward under a promotion casts the gradient to 16
        bits, and the stream's gradient sums the branch's and the skip's."""
        stream, a, h = self.stream, self.a, self.h
        self.fwd((stream + a + stream) * h)
        if stream != a:
            self.bwd((stream + a) * h)
        self.bwd(3.0 * stream * h)

    def qkv(self, y: float, qkv_bias: bool) -> None:
        """norm1's output into the q/k/v projections, by the tower's layout."""
        a, h = self.a, self.h
        if self.t.subln:  # separate q, k, v (bias on q and v)
            self.linear_inputs(h, 3.0, y)
            if qkv_bias:
                self.bias_grads(h)
                self.bias_grads(h)
        elif not self.text:
            # fused qkv of EVA01: the bias is cat(q_bias, zeros, v_bias) each forward (per block, not
            # per token); the q, k, v gradients are concatenated back (2a·3h) and reduced for the bias
            self.linear_inputs(h, 1.0, y)
            self.bwd(2.0 * a * 3.0 * h)
            if qkv_bias:
                self.bias_grads(3.0 * h)
                self.fwd(0.0, 2.0)  # zeros_like(v_bias) and the cat: per block, not per token
        else:  # OpenCLIP text: in_proj with bias; q, k, v are views of its output
            self.linear_inputs(h, 1.0, y)
            self.bias_grads(3.0 * h)
            # backward: unbind → stack the three gradients, and the permuted stack copied back to rows
            self.bwd(2.0 * a * 3.0 * h + 2.0 * a * 3.0 * h, 2.0)

    def rope(self, rope_share: float) -> None:
        """RoPE on q and k (patch tokens): forward t·cos (2a·n; the cos and sin tables are (patches ×
        head_dim), read once per op: not per token, left out), rotate-half: neg (a·n) and stack (2a·n),
        ·sin (2a·n), add (3a·n), cat with the CLS token (2a·h); backward: ·sin (2a·n), neg (a·n), stack
        (2a·n), ·cos (2a·n), add (3a·n), the two slices' gradients scattered back into full tensors
        (a·n + a·h, a·h) and summed (3a·h); then the q and k gradients, laid out by head, are copied
        back to rows (2a·h each). Under autocast the fp32 tables are cast to 16 bits on every call (4
        small kernels)."""
        a, h = self.a, self.h
        n = rope_share * h
        for _ in range(2):
            self.fwd(2.0 * a * n + a * n + 2.0 * a * n + 2.0 * a * n + 3.0 * a * n + 2.0 * a * h, 6.0)
            self.bwd(2.0 * a * n + a * n + 2.0 * a * n + 2.0 * a * n + 3.0 * a * n, 5.0)
            self.bwd(a * n + a * h + a * h + 3.0 * a * h, 3.0)
            self.bwd(2.0 * a * h, 1.0)
        if self.amp:
            self.fwd(0.0, 4.0)
        # q from the cat is laid out (batch, heads, seq, head_dim); the fused kernels write their output
        # like q, so the (batch, seq, width) view after attention is a copy.
        self.fwd(2.0 * a * h)

    def attention_half(self, qkv_bias: bool, rope_share: float, drop_path: bool) -> None:
        """norm1, q/k/v, RoPE, the output projection (after sub-LN), the residual add, drop path."""
        a, h = self.a, self.h
        self.qkv(self.norm_op(h, self.stream), qkv_bias)
        if self.t.rope:
            self.rope(rope_share)
        y2 = self.norm_op(h, a) if self.t.subln else a  # inner_attn_ln on the attention output
        self.linear_inputs(h, 1.0, y2)
        self.bias_grads(h)  # proj / out_proj
        self.residual_add()
        if drop_path:
            # DropPath: bernoulli_ mask per sample, x · mask (2a·h), / keep (2a·h); backward the same two.
            self.fwd(4.0 * a * h, 3.0)
            self.bwd(4.0 * a * h, 2.0)

    def mlp_half(self) -> None:
        """norm2, fc1 (two projections under SwiGLU), the activation, sub-LN, fc2 (the residual add and
        drop path after it are the block's tail: `tail`)."""
        a, h, f = self.a, self.h, self.f
        self.linear_inputs(h, 2.0 if self.t.swiglu else 1.0, self.norm_op(h, self.stream))
        if self.t.swiglu:
            self.bias_grads(f)
            self.bias_grads(f)
            # silu (2a·f) and the product (3a·f); backward: the product's two gradients (3a·f each) and
            # silu_backward (3a·f).
            self.fwd(2.0 * a * f + 3.0 * a * f, 2.0)
            self.bwd(3.0 * 3.0 * a * f, 3.0)
        else:
            self.bias_grads(f)
            self.fwd(2.0 * a * f)  # gelu
            self.bwd(3.0 * a * f)  # gelu_backward
        y3 = self.norm_op(f, a) if self.t.subln else a
        self.linear_inputs(f, 1.0, y3)
        self.bias_grads(h)

    def tail(self, drop_path: bool) -> tuple[Num, float]:
        """The last residual add and drop path, whose outputs backward does not read (a recompute stops
        before them): returns their forward bytes and kernels (the bernoulli_ draw is redrawn by a
        recompute, so it is not tail)."""
        fb0, fk0 = self.fb, self.fk
        self.residual_add()
        if drop_path:
            self.fwd(4.0 * self.a * self.h, 2.0)
            self.fwd(0.0, 1.0)  # the bernoulli_ draw of the mask (per sample), redrawn by a recompute
            fk0 -= 1.0
            self.bwd(4.0 * self.a * self.h, 2.0)
        return self.fb - fb0, self.fk - fk0


def _eager_block(
    t: TowerShape,
    norm: str,
    amp: bool,
    a: float,
    drop_path: bool,
    rope_share: float,
    qkv_bias: bool,
    text: bool,
) -> ElementwiseCost:
    """One pre-norm block's memory-bound ops under eager PyTorch (`_EagerBlock` prices each)."""
    block = _EagerBlock(t, norm, amp, a, text)
    block.attention_half(qkv_bias, rope_share, drop_path)
    block.mlp_half()
    tail_bytes, tail_kernels = block.tail(drop_path)
    return ElementwiseCost(block.fb, block.bb, block.fk, block.bk, tail_bytes, tail_kernels)


def block_elementwise(
    t: TowerShape,
    norm: str,
    stack: str,
    precision: str,
    drop_path: bool,
    rope_tokens_share: float = 1.0,
    qkv_bias: bool = True,
    text: bool = False,
) -> ElementwiseCost:
    """One pre-norm block's memory-bound work per token (h = width, f = MLP hidden, a = bytes per
    activation element), by software stack:

    eager / amp: ATen op by ATen op (`_eager_block`, checked against the op census of the real model).
    compile / fused: each chain between GEMMs is one kernel: residual add + next norm (read 2h,
    write 2h) twice, RoPE (read + write 2h), sub-LN after attention (2h), activation + MLP sub-LN
    (GELU 2f, SwiGLU 3f); drop path fuses into the residual add. Backward: twice the forward
    (evaplan assumption: a fused backward reads the saved inputs and the incoming gradient and writes
    one gradient per input).
    """
    a = ACT_BYTES[precision]
    if stack in ("eager", "amp"):
        return _eager_block(t, norm, stack == "amp", a, drop_path, rope_tokens_share, qkv_bias, text)
    if stack not in ("compile", "fused"):
        raise InfeasibleError(f"unknown software stack '{stack}'", hint=f"use one of: {', '.join(STACKS)}")
    h, f = float(t.width), float(t.mlp_hidden)
    by = 2.0 * 4.0 * a * h  # residual + norm, twice
    k = 2.0
    if t.rope:
        by += 4.0 * a * h
        k += 1.0
    if t.subln:
        by += 2.0 * a * h
        k += 1.0
    by += (3.0 if t.swiglu else 2.0) * a * f
    k += 1.0
    return ElementwiseCost(by, FUSED_BWD_RATIO * by, k, FUSED_BWD_RATIO * k)


# Backward of a fused elementwise chain: about twice the forward's traffic and kernels (evaplan
# assumption; the eager stacks count theirs op by op).
FUSED_BWD_RATIO = 2.0

# Host time per kernel launch, by software stack, from public measurements:
# - eager PyTorch pays Python argument parsing, the dispatcher, autograd recording and the launch on
#   every call: ~7 µs per pointwise op on tiny CUDA tensors (flagos-ai/FlagGems issue #4812,
#   https://github.com/flagos-ai/FlagGems/issues/4812, 2026-07-14: "sigmoid/relu/abs/silu/gelu all
#   ~70 us under use_gems vs ~7 us eager"; pytorch/pytorch issue #41383,
#   https://github.com/pytorch/pytorch/issues/41383, 2020-07-14: 6.8 s for 10⁶ `2*x` with autograd
#   recording, 6.8 µs per op). The model's Python also calls torch between kernels (views, reshapes,
#   functional wrappers): evaclip's EVA02-B/16 vision block makes 56 Python-level torch calls per
#   29 kernels in its forward (evaclip/op_census.py forward_calls_per_kernel; the bundled models'
#   blocks range 1.54–1.93 calls per kernel, tests/planner/test_op_census.py), so a kernel costs
#   7 µs × 56 / 29 = 13.5 µs of host time. evaplan assumption: backward kernels, issued by the C++
#   autograd engine, cost the same (the host runs ahead of the device in training, so this only
#   matters where a micro-batch is host-bound).
# - torch.compile's generated wrapper launches each Triton kernel through Inductor's
#   CachingAutotuner.run: 6.8 µs (no arguments) to 9.1 µs (19 arguments) per kernel on GB200
#   (meta-pytorch/tritonbench PR #1017, https://github.com/meta-pytorch/tritonbench/pull/1017,
#   2026-04-14); 9.1 µs taken (a fused kernel passes its tensors, sizes and strides).
# - fused (NeMo/Megatron, Transformer Engine): eager PyTorch calling fewer, larger ops: eager's cost
#   per kernel.
HOST_S_PER_TORCH_CALL = 7e-6
HOST_CALLS_PER_KERNEL = 56.0 / 29.0
HOST_S_PER_COMPILED_KERNEL = 9.1e-6
_EAGER_HOST_S = HOST_S_PER_TORCH_CALL * HOST_CALLS_PER_KERNEL
HOST_S_PER_KERNEL = {
    "eager": _EAGER_HOST_S,
    "amp": _EAGER_HOST_S,
    "compile": HOST_S_PER_COMPILED_KERNEL,
    "fused": _EAGER_HOST_S,
}
# Kernels per GEMM launch beyond the GEMM itself are none (bias in the epilogue); a Linear's backward
# is 2 GEMMs plus a bias-gradient reduction where it has a bias.


def vision_block_elementwise(model: ModelSpec, stack: str, precision: str, seq: Num) -> ElementwiseCost:
    """One vision block at `seq` tokens per image (RoPE rotates the seq − 1 patch tokens)."""
    v = model.vision
    return block_elementwise(
        vision_shape(model),
        v.norm,
        stack,
        precision,
        v.drop_path_rate > 0,
        rope_tokens_share=(seq - 1.0) / seq,
        qkv_bias=v.qkv_bias,
    )


def text_block_elementwise(model: ModelSpec, stack: str, precision: str) -> ElementwiseCost:
    return block_elementwise(text_shape(model), "layernorm", stack, precision, False, text=True)


def autocast_weights(model: ModelSpec) -> tuple[float, float]:
    """(elements, tensors) of the parameters autocast copies to 16 bits every forward: every
    Linear's and the patch embedding's weight and bias, the CLS token, position embedding and text
    projection; not the norms' weights (LayerNorm runs in fp32), the token embedding (a gather, not
    autocast) or its position embedding (added in fp32), nor the logit scale."""
    elements = tensors = 0.0
    for p in param_tensors(model):
        if _autocast_casts(p.name):
            elements += float(math.prod(p.shape))
            tensors += 1.0
    return elements, tensors


_NOT_CAST = ("norm", "ln", "token_embedding", "positional_embedding", "logit_scale")


def _autocast_casts(name: str) -> bool:
    """Whether autocast copies this parameter to 16 bits (by its module's and its own name)."""
    return not any(k in part for part in name.split(".")[-2:] for k in _NOT_CAST)


def block_elementwise_bytes_per_token(ew: ElementwiseCost, passes: Num) -> Num:
    """Memory-bound bytes per token of one block through a micro-batch: the forward, the recompute
    (checkpointing: passes = 2) without its skipped tail, the backward."""
    return ew.fwd_bytes_per_token + (passes - 1.0) * ew.recompute_bytes_per_token() + ew.bwd_bytes_per_token


def block_kernel_count(t: TowerShape, ew: ElementwiseCost, passes: Num, backward: bool = True) -> Num:
    """ATen ops of one block through a micro-batch: forward GEMMs (q/k/v or qkv, proj, 2 or 3 MLP),
    the attention kernel and the memory-bound ops; the recompute without its tail (the last GEMM
    among it); backward (not at inference) 2 GEMMs per weight, the attention backward, the
    memory-bound ops."""
    g = (4.0 if t.subln else 2.0) + (3.0 if t.swiglu else 2.0)
    fwd = g + 1.0 + ew.fwd_kernels
    if not backward:
        return passes * fwd
    recompute = fwd - 1.0 - ew.tail_kernels
    return fwd + (passes - 1.0) * recompute + 2.0 * g + 1.0 + ew.bwd_kernels


def autocast_block_weights(model: ModelSpec, tower: str) -> tuple[float, float]:
    """(elements, tensors) of one block's parameters autocast copies (block 0 of the tower)."""
    elements = tensors = 0.0
    for p in param_tensors(model):
        if p.tower == tower and p.block == 0 and _autocast_casts(p.name):
            elements += float(math.prod(p.shape))
            tensors += 1.0
    return elements, tensors


def block_totals(
    model: ModelSpec, tower: str, *, micro_batch: Num, seq: Num, stack: str, precision: str, grad_ckpt: bool
) -> tuple[Num, Num]:
    """One block of `tower` through one micro-batch: (memory-bound bytes, ATen ops including its
    GEMMs and attention), as microbatch_time prices them; tests/planner/test_op_census.py compares
    both with evaclip/op_census.py on the real model."""
    passes = 2.0 if grad_ckpt else 1.0
    if tower == "vision":
        t, ew = vision_shape(model), vision_block_elementwise(model, stack, precision, seq)
    else:
        t, ew = text_shape(model), text_block_elementwise(model, stack, precision)
    rows = micro_batch * seq
    nbytes = rows * block_elementwise_bytes_per_token(ew, passes)
    kernels = block_kernel_count(t, ew, passes)
    if stack == "amp":
        elements, tensors = autocast_block_weights(model, tower)
        nbytes = nbytes + elements * (4.0 + ACT_BYTES[precision]) * (passes + 1.0)
        kernels = kernels + tensors * (passes + 1.0)
    return nbytes, kernels


STEM_OPS = 105.0
# Kernels outside the blocks of one tower's forward at inference (evaclip/model.py): image: patch-embed
# conv, CLS concat, position-embedding add, final norm, head; text: token-embedding gather, position
# add, final norm, EOT gather, projection.
FORWARD_STEM_KERNELS = 5.0


def vision_stem_bytes(model: ModelSpec, b: Num, patches: Num, rows: Num, patch_dropout: Num, a: float) -> Num:
    """Forward bytes of the vision stem: + position embedding (read 2, write 1 over the P + 1 tokens)
    and, with patch dropout, the gather of the kept tokens (read + write)."""
    w = float(model.vision.width)
    stem = b * (patches + 1.0) * w * 3.0 * a
    return stem + np.where(np.asarray(patch_dropout) > 0, rows * w * 2.0 * a, 0.0)


def text_stem_bytes(model: ModelSpec, rows: Num, a: float) -> Num:
    """Forward bytes of the text stem: the embedding gather (read + write) and + position embedding
    (read 2, write 1), over every token: 5a, and the final norm's read + write: 2a, per element."""
    w = float(model.text.width)
    return rows * w * 5.0 * a + rows * w * 2.0 * a


def overlap_host(hw: HardwareSpec, device: Num, host: Num) -> Num:
    """A GPU runs ahead of its host thread (the longer of the two); a CPU "device" is the host itself
    (their sum)."""
    return device + host if hw.vendor == "cpu" else np.maximum(device, host)


@dataclass(frozen=True)
class MicrobatchTime:
    """Device and host time of one micro-batch on one GPU, by kind of work."""

    gemm_s: Num
    attention_s: Num
    memory_s: Num
    device_s: Num
    kernels: Num
    host_s: Num
    total_s: Num
    gemm_flops: Num  # executed GEMM FLOPs (for the achieved GEMM efficiency)
    # gemm_s, attention_s and memory_s as sums of their parts (by tower and stem), for --explain.
    terms: dict[str, Term] = field(default_factory=dict)


def _tower_gemms(
    hw: HardwareSpec, t: TowerShape, rows: Num, passes: Num, precision: str, scale: float
) -> Num:
    h, f = float(t.width), float(t.mlp_hidden)
    if t.subln:
        # EVA with sub-LN projects q, k and v separately (evaclip EvaAttention.separate_qkv).
        tt = 3.0 * linear_train_time_s(hw, rows, h, h, passes, precision, scale)
    else:
        tt = linear_train_time_s(hw, rows, 3.0 * h, h, passes, precision, scale)
    tt = tt + linear_train_time_s(hw, rows, h, h, passes, precision, scale)
    if t.swiglu:
        tt = tt + 2.0 * linear_train_time_s(hw, rows, f, h, passes, precision, scale)
    else:
        tt = tt + linear_train_time_s(hw, rows, f, h, passes, precision, scale)
    tt = tt + linear_train_time_s(hw, rows, h, f, passes, precision, scale)
    return t.layers * tt


def _tower_gemm_flops(t: TowerShape, rows: Num, passes: Num) -> Num:
    h, f = float(t.width), float(t.mlp_hidden)
    per_row = 2.0 * h * (3.0 * h + h + (3.0 if t.swiglu else 2.0) * f)
    return t.layers * rows * per_row * (passes + 2.0)


def _gemm_term(
    model: ModelSpec,
    hw: HardwareSpec,
    b: Num,
    patches: Num,
    rows_v: Num,
    rows_t: Num,
    loss_rows: Num,
    contrast_batch: Num,
    passes: Num,
    precision: str,
    scale: float,
    stem_passes: Num = 1.0,
) -> Term:
    """The GEMMs of one micro-batch, summed by part: blocks (`passes` forwards), patch embedding (no
    input gradient) and heads (`stem_passes` forwards), logits."""
    v, tx, e = model.vision, model.text, float(model.embed_dim)
    k_patch = 3.0 * v.patch_size**2
    return sum_term(
        {
            "vision_blocks_s": _tower_gemms(hw, vision_shape(model), rows_v, passes, precision, scale),
            "text_blocks_s": _tower_gemms(hw, text_shape(model), rows_t, passes, precision, scale),
            "patch_embed_s": linear_train_time_s(
                hw, b * patches, float(v.width), k_patch, stem_passes, precision, scale, False
            ),
            "vision_head_s": linear_train_time_s(hw, b, e, float(v.width), stem_passes, precision, scale),
            "text_head_s": linear_train_time_s(hw, b, e, float(tx.width), stem_passes, precision, scale),
            # Logits image→text and text→image: loss_rows × contrast_batch each, K = e (+ 2 backward GEMMs).
            "logits_s": 2.0
            * linear_train_time_s(hw, loss_rows * 1.0, contrast_batch * 1.0, e, 1.0, precision, scale),
        }
    )


def microbatch_time(
    model: ModelSpec,
    hw: HardwareSpec,
    *,
    micro_batch: Num,
    image_size: Num,
    patch_dropout: Num,
    grad_ckpt: Num,
    contrast_batch: Num,
    loss_rows: Num,
    stack: str = "eager",
    precision: str = "bf16",
    attention: str = "flash",
    nograd_forwards: Num = 0.0,
) -> MicrobatchTime:
    """Forward + backward (+ recompute) of one micro-batch of `micro_batch` samples on one GPU.

    contrast_batch: columns of the logits (the global batch with gathered features); loss_rows: rows
    per GPU (the micro-batch with local loss, the global batch without); nograd_forwards: forwards of
    both towers without gradients (no loss, no backward) on top (OpenCLIP's gradient accumulation:
    `nograd_forwards_per_microbatch`)."""
    v, tx = model.vision, model.text
    scale = compute_scale_of(hw)
    passes = np.where(grad_ckpt, 2.0, 1.0)
    fwd_passes = passes + nograd_forwards
    b = micro_batch * 1.0
    patches = np.floor_divide(image_size, v.patch_size) ** 2
    s_v = vision_tokens(patches, patch_dropout)
    s_t = float(tx.context_length)
    vs, ts = vision_shape(model), text_shape(model)
    rows_v, rows_t = b * s_v, b * s_t
    e = float(model.embed_dim)

    # -- GEMMs: blocks, patch embedding (no input gradient), heads, logits (not in a no-grad forward).
    k_patch = 3.0 * v.patch_size**2
    stem_passes = 1.0 + nograd_forwards
    gemm_t = _gemm_term(
        model,
        hw,
        b,
        patches,
        rows_v,
        rows_t,
        loss_rows,
        contrast_batch,
        fwd_passes,
        precision,
        scale,
        stem_passes,
    )
    gemm_flops = _tower_gemm_flops(vs, rows_v, fwd_passes) + _tower_gemm_flops(ts, rows_t, fwd_passes)
    gemm_flops = gemm_flops + (1.0 + stem_passes) * b * patches * v.width * k_patch * 2.0
    gemm_flops = gemm_flops + (2.0 + stem_passes) * 2.0 * b * e * (v.width + tx.width)
    gemm_flops = gemm_flops + 2.0 * 3.0 * 2.0 * loss_rows * contrast_batch * e

    # -- attention (the text tower's causal).
    vision_attn = attention_time_s(
        hw, attention, rows_v, s_v, v.heads, v.head_width, fwd_passes, False, precision, scale, stack
    )
    text_attn = attention_time_s(
        hw, attention, rows_t, s_t, tx.heads, tx.head_width, fwd_passes, True, precision, scale, stack
    )
    attn_t = sum_term({"vision_s": v.depth * vision_attn, "text_s": tx.layers * text_attn})

    # -- memory-bound work.
    ew_v = vision_block_elementwise(model, stack, precision, s_v)
    ew_t = text_block_elementwise(model, stack, precision)
    mem_parts, cast_tensors = _microbatch_memory_parts(
        model,
        stack,
        precision,
        (ew_v, ew_t),
        (b, patches, rows_v, rows_t),
        passes,
        nograd_forwards,
        patch_dropout,
        loss_rows * contrast_batch,
    )
    bw = hbm_bytes_per_s(hw) * scale
    bandwidth = Term("hbm_bytes_per_s", {"hbm_bytes_per_s": bw})  # achieved HBM bandwidth × compute_scale
    memory_t = compose("{moved} / {bandwidth}", moved=sum_term(mem_parts), bandwidth=bandwidth)
    gemm, attn, memory = gemm_t.value, attn_t.value, memory_t.value
    device = gemm + attn + memory

    kernels = _microbatch_kernels((vs, ts), (ew_v, ew_t), passes, nograd_forwards, cast_tensors)
    host = host_term(kernels, HOST_S_PER_KERNEL[stack]).value
    total = overlap_host(hw, device, host)
    terms = {"gemm": gemm_t, "attention": attn_t, "memory_bound": memory_t}
    return MicrobatchTime(gemm, attn, memory, device, kernels, host, total, gemm_flops, terms)


def _microbatch_kernels(
    shapes: tuple[TowerShape, TowerShape],
    elementwise: tuple[ElementwiseCost, ElementwiseCost],
    passes: Num,
    nograd_forwards: Num,
    cast_tensors: Num,
) -> Num:
    """Kernels of one micro-batch: per block the GEMMs (forward; backward 2 per weight), the attention
    kernel forward and backward, and the memory-bound ops counted op by op; a no-grad forward's blocks
    and stems; the weight casts of every pass; and the stems, heads and loss (STEM_OPS)."""
    (vs, ts), (ew_v, ew_t) = shapes, elementwise
    kernels = vs.layers * block_kernel_count(vs, ew_v, passes) + ts.layers * block_kernel_count(
        ts, ew_t, passes
    )
    fwd_only = vs.layers * block_kernel_count(vs, ew_v, 1.0, False) + ts.layers * block_kernel_count(
        ts, ew_t, 1.0, False
    )
    kernels = kernels + nograd_forwards * (fwd_only + 2.0 * FORWARD_STEM_KERNELS)
    kernels = kernels + cast_tensors * (passes + 1.0 + nograd_forwards)
    # Stems, heads and the loss (patch embed, cls/pos, dropout gather, final norms, heads, normalise,
    # logits, cross-entropy), forward and backward: 105 ATen ops in the op census of EVA02-B/16
    # (benchmarks/op_census.py --ops; the same code runs for every bundled model).
    return kernels + STEM_OPS


def _microbatch_memory_parts(
    model: ModelSpec,
    stack: str,
    precision: str,
    ews: tuple[ElementwiseCost, ElementwiseCost],
    sizes: tuple[Num, Num, Num, Num],
    passes: Num,
    nograd_forwards: Num,
    patch_dropout: Num,
    logits: Num,
) -> tuple[dict[str, Num], float]:
    """Memory-bound bytes of one micro-batch by part (and the tensors autocast casts per pass): the
    blocks (forward, recompute, backward, and the forwards without gradients), the stems, the CLIP
    loss over `logits` = loss rows × contrast batch, the token embedding's gradient and, under `amp`,
    the weight casts. sizes: (micro-batch, patches, vision rows, text rows)."""
    v, tx = model.vision, model.text
    a = ACT_BYTES[precision]
    ew_v, ew_t = ews
    b, patches, rows_v, rows_t = sizes
    vision_fwd = v.depth * rows_v * ew_v.fwd_bytes_per_token
    text_fwd = tx.layers * rows_t * ew_t.fwd_bytes_per_token
    parts = {
        "vision_blocks_bytes": v.depth * rows_v * block_elementwise_bytes_per_token(ew_v, passes)
        + nograd_forwards * vision_fwd,
        "text_blocks_bytes": tx.layers * rows_t * block_elementwise_bytes_per_token(ew_t, passes)
        + nograd_forwards * text_fwd,
    }
    stem = vision_stem_bytes(model, b, patches, rows_v, patch_dropout, a) + text_stem_bytes(model, rows_t, a)
    parts["stems_bytes"] = stem * (1.0 + nograd_forwards + FUSED_BWD_RATIO)
    # CLIP loss: two loss_rows × contrast_batch fp32 logits matrices: scale (read + write), log-softmax
    # (read + write) and the NLL read forward (5 accesses), softmax gradient backward (read 2, write 1,
    # and the scale's gradient read + write: 5), 4 bytes each.
    parts["clip_loss_bytes"] = 2.0 * logits * 4.0 * (5.0 + 5.0)
    # The token embedding's gradient is a dense vocabulary × width table written every micro-batch
    # (embedding_dense_backward: the largest memory-bound op outside the blocks in the census).
    parts["token_embedding_grad_bytes"] = float(tx.vocab_size) * tx.width * a
    cast_tensors = 0.0
    if stack == "amp":
        # autocast copies every fp32 weight a 16-bit op reads to 16 bits once per forward (read 4,
        # write a; not the norms' weights, the token embedding or the logit scale), and the backward
        # casts each 16-bit weight gradient to the fp32 .grad (read a, write 4). A later micro-batch
        # of an accumulation step adds it to .grad instead (read a + 4 + 4, write 4: not modelled).
        psi_cast, cast_tensors = autocast_weights(model)
        parts["autocast_cast_bytes"] = psi_cast * (4.0 + a) * (passes + 1.0 + nograd_forwards)
    return parts, cast_tensors


# OpenCLIP's gradient accumulation (`--accum-freq k`, mlfoundations/open_clip src/training/train.py,
# pull request #267): for each of the k micro-batches it first computes the image and text features
# under torch.no_grad() and caches them; then, for each micro-batch again, a forward with gradients
# whose loss uses its fresh features with the other k − 1 cached ones, and its backward. One forward
# of both towers without gradients per micro-batch more than ordinary accumulation. The bundled
# trainer (DeepSpeed, stack eager) and NeMo (fused) accumulate ordinarily; `amp` is OpenCLIP's stack.
def nograd_forwards_per_microbatch(stack: str, grad_accum: Num) -> Num:
    """Forwards without gradients a trainer runs per micro-batch besides its forward with gradients."""
    if stack != "amp":
        return np.where(np.asarray(grad_accum) > 1, 0.0, 0.0)
    return np.where(np.asarray(grad_accum) > 1, 1.0, 0.0)


def host_term(kernels: Num, host_s_per_kernel: float) -> Term:
    """The host thread's time to issue a micro-batch's kernels (GPU: overlaps device work; CPU: adds)."""
    return Term("kernels * host_s_per_kernel", {"kernels": kernels, "host_s_per_kernel": host_s_per_kernel})


# ----------------------------------------------------------------------------------- per step
# Bytes per parameter of one optimizer step over fp32 states (DeepSpeed's 16-bit optimizers keep an
# fp32 gradient partition): Adam reads master 4 + exp_avg 4 + exp_avg_sq 4 + gradient 4 and writes
# master, exp_avg, exp_avg_sq (12) and the 16-bit parameter copy (2): 30. LAMB (DeepSpeed FusedLamb)
# computes the update in a first pass with the per-tensor norms of parameter and update, then reads
# update and parameter again and writes the parameter: + 4 (update write) + 8 (re-read): 42.
OPTIMIZER_BYTES_PER_PARAM = {"adamw": 30.0, "lamb": 42.0}
# Gradient clipping (DeepSpeed: norm over the fp32 gradient partition, then gradients scaled by the
# clip coefficient): read 4 + read 4 + write 4.
CLIP_BYTES_PER_PARAM = 12.0
# fp16 with dynamic loss scaling, as the two trainers' code does it:
# - DeepSpeed (stacks eager, fused; runtime/zero/stage_1_and_2.py, runtime/fp16/fused_optimizer.py):
#   an overflow check over the gradient partition (`_has_inf_or_nan`: read 4), and the unscale
#   (read 4 + write 4), which DeepSpeed folds into the clip coefficient when clipping
#   (`unscale_and_clip_grads`: one multiply by loss scale × clip coefficient).
# - torch.cuda.amp.GradScaler (stack amp: OpenCLIP's train.py calls scaler.unscale_(optimizer) before
#   clip_grad_norm_, else scaler.step unscales): `_amp_foreach_non_finite_check_and_unscale_` checks
#   and unscales every fp32 gradient in one pass (read 4 + write 4), whether or not it clips.
# Both skip the optimizer step of an iteration whose gradients overflowed and lower the scale; the
# scale grows again after 1,000 (DeepSpeed loss_scale_window) / 2,000 (GradScaler growth_interval)
# clean steps, so after the first steps about one step in 1,000–2,000 is skipped: its samples are
# still processed (samples/s unchanged), and the step it saves is under 0.1 % of the run. The
# mechanism costs a few bytes per parameter per step, well under 1 % of a CLIP step: it does not
# explain the ~30 % fp16-vs-bf16 gap one public pair of A100 runs shows (docs/planner-model.md).
FP16_CHECK_BYTES_PER_PARAM = 4.0
FP16_UNSCALE_BYTES_PER_PARAM = 8.0


# A plain-PyTorch trainer's torch.optim.AdamW (stack `amp`: OpenCLIP's and Chinese-CLIP's
# `optim.AdamW(param_groups, lr, betas, eps)`, which name no implementation) in fp32 states, bytes per
# parameter by how it runs (TrainingSpec.optimizer_impl):
# - fused (`fused=True`, one kernel reading parameter, gradient and both moments and writing parameter
#   and moments): OPTIMIZER_BYTES_PER_PARAM;
# - foreach, torch ≥ 2.0's default on CUDA (torch/optim/adamw.py `adamw`: `_default_to_fused_or_foreach`
#   picks foreach, not fused; `_multi_tensor_adamw`): one pass per operation, read + write 4 bytes each
#   unless stated: weight decay `_foreach_mul_` 8, `_foreach_lerp_` of the first moment toward the
#   gradient 12, `_foreach_mul_` of the second 8, `_foreach_addcmul_` (moment and the gradient twice) 16,
#   `_foreach_sqrt` 8, `_foreach_div_` 8, `_foreach_add_` of eps 8, `_foreach_addcdiv_` (parameter, moment,
#   denominator) 16: 84;
# - single_tensor, torch ≤ 1.13's default (https://github.com/pytorch/pytorch/blob/v1.13.1/torch/optim/
#   adamw.py `adamw`: "if foreach is None: [...] foreach = False"; `_single_tensor_adamw`): the same
#   passes tensor by tensor, with the first moment's update written `exp_avg.mul_(beta1).add_(grad,
#   alpha=1 - beta1)` (8 + 12 where lerp_ moves 12): 92. tests/planner/test_op_census.py counts torch's
#   own single-tensor and foreach steps op by op on the CPU.
ADAMW_BYTES_PER_PARAM_BY_IMPL = {
    "fused": OPTIMIZER_BYTES_PER_PARAM["adamw"],
    "foreach": 84.0,
    "single_tensor": 92.0,
}
# The amp stack's AdamW when a run does not say: torch ≥ 2.0's default.
DEFAULT_OPTIMIZER_IMPL = "foreach"
# torch ≤ 1.13's `_single_tensor_adamw` issues 11 ATen ops per parameter tensor: `step_t += 1` and
# `step_t.item()` on the CPU step counter, then mul_ (weight decay), mul_ and add_ (first moment),
# mul_ and addcmul_ (second moment), sqrt, div, add_ (eps) and addcdiv_ on the device.
SINGLE_TENSOR_ADAMW_OPS_PER_TENSOR = 11.0


def optimizer_impl_of(stack: str, impl: str | None) -> str:
    """The AdamW implementation a stack runs: the amp stack's plain torch optimizer as the run says
    (DEFAULT_OPTIMIZER_IMPL when it does not); the others step fused optimizers of their own (DeepSpeed,
    Apex DistributedFusedAdam, the bundled trainer's fused AdamW under compile)."""
    return (impl or DEFAULT_OPTIMIZER_IMPL) if stack == "amp" else "fused"


def optimizer_impl_refusal(stack: str, impl: str | None, optimizer: str) -> InfeasibleError | None:
    """An AdamW implementation named where none is read (another stack, whose own fused optimizer
    optimizer_impl_of reports, or a model whose recipe steps another optimizer): one clear line
    instead of a silently different optimizer."""
    why = optimizer_impl_unread(stack, impl)
    if why is not None:
        return InfeasibleError(
            f"--optimizer-impl {impl} applies to --stack amp only (--{why})",
            hint="drop --optimizer-impl or add --stack amp",
        )
    if impl is not None and optimizer != "adamw":
        return InfeasibleError(
            f"--optimizer-impl {impl} chooses how torch's AdamW runs, and this model's recipe steps {optimizer}",
            hint="drop --optimizer-impl",
        )
    return None


def step_bytes_per_param(
    optimizer: str, grad_clip: bool, precision: str, stack: str = "eager", impl: str | None = None
) -> float:
    """Bytes moved per parameter of this rank's partition by one optimizer step."""
    by = OPTIMIZER_BYTES_PER_PARAM[optimizer]
    if optimizer == "adamw":
        by = ADAMW_BYTES_PER_PARAM_BY_IMPL[optimizer_impl_of(stack, impl)]
    if grad_clip:
        by += CLIP_BYTES_PER_PARAM
    if precision == "fp16":
        if stack == "amp":  # GradScaler: one fused check-and-unscale pass, clipping or not
            by += FP16_UNSCALE_BYTES_PER_PARAM
        else:  # DeepSpeed: the check; the unscale folded into clipping when it clips
            by += FP16_CHECK_BYTES_PER_PARAM + (0.0 if grad_clip else FP16_UNSCALE_BYTES_PER_PARAM)
    return by


# DeepSpeed 0.19.8 at ZeRO-0 with bf16 (or fp16) weights and a client torch optimizer wraps it in
# FP16_UnfusedOptimizer (runtime/engine.py `_configure_optimizer`: DDP_BFLOAT16 when the gradients
# accumulate in the weights' dtype), whose step loops over the parameter tensors in Python: an
# overflow check, a gradient norm, the 16-bit gradient cast to fp32, the unscale/clip multiply and
# the copy of the updated fp32 master back to 16 bits, tensor by tensor, with a host-device
# synchronisation per tensor (`.item()` on the checks). The op census of the real engine
# (evaclip/op_census.engine_step_census, pinned in tests/planner/test_op_census.py) counts 18 ATen
# ops per parameter tensor besides the optimizer's own, moving per parameter: two casts of the
# gradient to fp32 (2 × (a + 4)), the unscale multiply (4 + 4), the norm (4), the overflow check's
# min and max (2a) and the master copy back (4 + 4): 28 + 4a bytes.
DS_UNFUSED_OPS_PER_TENSOR = 18.0


def ds_unfused_bytes_per_param(precision: str) -> float:
    return 28.0 + 4.0 * ACT_BYTES[precision]


# DeepSpeed's ZeRO-1/2 optimizer (runtime/zero/stage_1_and_2.py DeepSpeedZeroOptimizer, 0.19.8) steps the
# fp32 master partition as one flat tensor, but two loops before it still go over this rank's gradient
# partition tensor by tensor: the overflow check (`has_overflow_partitioned_grads_serial`: `has_inf_or_nan`
# per gradient, isfinite, amax, amin and the logical ops) and the gradient norm for clipping
# (`get_grad_norm_direct`: a cast, a detach and `torch.linalg.vector_norm` per gradient). The op census
# of the real engine (evaclip/op_census.engine_step_census, pinned in tests/planner/test_op_census.py)
# counts 15 ATen ops per gradient tensor of the partition, on one rank as on two (the partition holds
# about 1/N of the tensors). Backward ends in a device synchronisation (`independent_gradient_partition_
# epilogue` with overlap_comm), so the device is idle while the host issues these small kernels: their
# host time is added to the step, as the ZeRO-0 loop's is. Their bytes (a few reads of each 16-bit
# gradient of the partition) are under the step's modelled optimizer pass (step_bytes_per_param) and
# left out. ZeRO-3 is not censused here: its per-module parameter hooks run in forward and backward.
DS_ZERO12_OPS_PER_PARTITION_TENSOR = 15.0


def deepspeed_wrapper_term(
    hw: HardwareSpec,
    tensors: float,
    psi: float,
    zero_stage: Num,
    stack: str,
    precision: str,
    world: Num = 1.0,
) -> Term:
    """Per optimizer step, the bundled trainer's (stack `eager`) DeepSpeed work around the optimizer
    that goes tensor by tensor (16-bit engines only):
    - ZeRO-0: the unfused wrapper, its bytes over HBM plus its ops' host time (HOST_S_PER_TORCH_CALL
      each), added to the step, not overlapped: the per-tensor synchronisations make the host wait for
      the device before it issues the next small kernel, so the device idles between them;
    - ZeRO-1/2: the overflow check and gradient norm over this rank's `tensors / world` gradient
      tensors (DS_ZERO12_OPS_PER_PARTITION_TENSOR ops each), host time issued after backward's
      synchronisation, added likewise;
    - ZeRO-3 and the other stacks (plain PyTorch or other frameworks: deepspeed_wrapper 0): none."""
    scale = compute_scale_of(hw)
    # Each ATen op is at most one Python-level torch call of DeepSpeed's loops (the census counts ATen
    # ops; several come from one call): HOST_S_PER_TORCH_CALL each.
    return Term(
        "deepspeed_wrapper * where(zero_stage == 0, ds_wrapper_bytes_per_param * psi / hbm_bytes_per_s"
        " + param_tensors * ds_wrapper_ops_per_tensor * host_s_per_torch_call,"
        " where(zero_stage <= 2, param_tensors / N * ds_zero_ops_per_partition_tensor * host_s_per_torch_call,"
        " 0.0))",
        {
            "zero_stage": np.asarray(zero_stage),
            "deepspeed_wrapper": stack == "eager" and precision != "fp32",
            "ds_wrapper_bytes_per_param": ds_unfused_bytes_per_param(precision),
            "psi": psi,
            "hbm_bytes_per_s": hbm_bytes_per_s(hw) * scale,
            "param_tensors": tensors,
            "ds_wrapper_ops_per_tensor": DS_UNFUSED_OPS_PER_TENSOR,
            "ds_zero_ops_per_partition_tensor": DS_ZERO12_OPS_PER_PARTITION_TENSOR,
            "N": world,
            "host_s_per_torch_call": HOST_S_PER_TORCH_CALL,
        },
    )


# A single-tensor AdamW step (torch ≤ 1.13, above) issues its small kernels one tensor at a time from
# Python. Where the host reaches the step with the device idle, each tensor takes the longer of the
# host's time to issue its ops (SINGLE_TENSOR_ADAMW_OPS_PER_TENSOR × HOST_S_PER_TORCH_CALL, the
# convention of DeepSpeed's per-tensor loops above) and the device's time for its bytes; the step term
# (optimizer_step_term) already has the bytes, so what the host adds is the excess. The host reaches
# the step with the device idle under fp16: torch.cuda.amp.GradScaler.step skips the step of an
# overflowed iteration and to know it waits for the device, `sum(v.item() for v in
# optimizer_state["found_inf_per_device"].values())` before `optimizer.step()` (torch/cuda/amp/
# grad_scaler.py `_maybe_opt_step`, https://github.com/pytorch/pytorch/blob/v1.13.1/torch/cuda/amp/
# grad_scaler.py). Under bf16 (no scaler) nothing waits: the host issues the loop while the device
# still runs the backward, and the step costs its bytes only. Foreach and fused steps issue a handful
# of launches per step: none added.
def torch_optimizer_loop_term(
    hw: HardwareSpec,
    numels: Sequence[float],
    bytes_per_param: float,
    zero_stage: Num,
    world: Num,
    stack: str,
    precision: str,
    impl: str | None,
) -> Term:
    """Per optimizer step, the host time a single-tensor AdamW step adds beyond its bytes when fp16's
    loss scaler has made the host wait for the device (stack amp; 0 otherwise): Σ over the parameter
    tensors of max(0, ops × host time per op − bytes_per_param × numel / HBM), over this rank's share
    of the tensors (1/N of them from ZeRO-1 on)."""
    scale = compute_scale_of(hw)
    hbm = hbm_bytes_per_s(hw) * scale
    exposed = optimizer_impl_of(stack, impl) == "single_tensor" and precision == "fp16"
    host = SINGLE_TENSOR_ADAMW_OPS_PER_TENSOR * HOST_S_PER_TORCH_CALL
    excess = float(np.sum(np.maximum(0.0, host - bytes_per_param * np.asarray(numels, dtype=float) / hbm)))
    return Term(
        "single_tensor_fp16 * excess_s * where(zero_stage >= 1, 1.0 / N, 1.0)",
        {
            "single_tensor_fp16": exposed,
            "excess_s": excess,
            "zero_stage": np.asarray(zero_stage),
            "N": world,
            "ops_per_tensor": SINGLE_TENSOR_ADAMW_OPS_PER_TENSOR,
            "host_s_per_torch_call": HOST_S_PER_TORCH_CALL,
            "bytes_per_param": bytes_per_param,
            "hbm_bytes_per_s": hbm,
        },
    )


def optimizer_step_term(
    psi: Num,
    world: Num,
    zero_stage: Num,
    offload_optimizer: Num,
    hw: HardwareSpec,
    bytes_per_param: float,
) -> Term:
    """The optimizer's memory-bound pass over this rank's partition (Ψ/N from ZeRO-1 on, Ψ without
    ZeRO); zero with the optimizer offloaded (the CPU step is in planner.offload)."""
    scale = compute_scale_of(hw)
    return Term(
        "where(offload_optimizer, 0.0,"
        " bytes_per_param * where(zero_stage >= 1, psi / N, psi * 1.0) / hbm_bytes_per_s)",
        {
            "offload_optimizer": np.asarray(offload_optimizer, dtype=bool),
            "bytes_per_param": bytes_per_param,
            "zero_stage": np.asarray(zero_stage),
            "psi": psi,
            "N": world,
            "hbm_bytes_per_s": hbm_bytes_per_s(hw) * scale,
        },
    )
