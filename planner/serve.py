"""Serving an EVA-CLIP encoder: time per batch, memory per replica, the setting that meets a latency
target, and what a million embeddings cost.

Inference FLOPs are the forward FLOPs of planner.compute (FlopCounterMode's counting) of one tower on
one input in eval mode: no patch dropout, the model's own resolution, no CLIP loss. Every batch time
goes through one function, planner/inference_time.py `inference_batch_time_s`: the per-operation time
model of training (planner/ops.py), forward only, with the same compute scale.

Pure Python + numpy: no torch.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from planner import memory, ops
from planner.errors import InfeasibleError
from planner.inference_time import (
    ACTIVATION_BYTES,
    BatchTime,
    Tower,
    inference_batch_time_s,
    peak_flops,
    tokens,
)
from planner.params import count_params
from planner.spec import HardwareSpec, ModelSpec, OfferingSpec
from planner.units import GIB

PRECISIONS: tuple[str, ...] = ("bf16", "fp8", "int8")

# Bytes per weight: the time model's (planner/ops.py WEIGHT_BYTES: fp8/int8 weights 1 byte); per
# activation element 16-bit at every serving precision (planner/inference_time.py ACTIVATION_BYTES).
WEIGHT_BYTES = {p: ops.WEIGHT_BYTES[p] for p in PRECISIONS}
# Batches searched: 1 … 65,536 (beyond that no embedding service batches; memory stops it first).
MAX_BATCH = 65536
# Batch reported when neither --batch nor --p99-ms is given: an evaplan default, the usual dynamic-
# batching cap of embedding servers (Triton / TorchServe examples use 8-64), clipped to what fits.
DEFAULT_BATCH = 32


# ----------------------------------------------------------------------------------- per tower
def _precisions_of(hw: HardwareSpec) -> list[str]:
    """The precisions the profile has a tensor-core rate for."""
    return [p for p in PRECISIONS if p == "bf16" or hw.fp8_dense_tflops is not None]


def _tower_dims(model: ModelSpec, tower: Tower) -> tuple[int, int, int, int, bool]:
    """(blocks, width, mlp hidden, heads, swiglu)."""
    if tower == "image":
        v = model.vision
        return v.depth, v.width, v.mlp_hidden, v.heads, v.mlp == "swiglu"
    t = model.text
    return t.layers, t.width, t.mlp_hidden, t.heads, False


def activation_bytes_per_sample(
    model: ModelSpec, tower: Tower, tp: int = 1, attention: str = "flash", stack: str = "eager"
) -> float:
    """Live activations of one input at inference (nothing is kept for backward): the residual stream
    and its normed copy 2h, replicated on every TP rank, plus the widest working set of one block,
    split over the TP ranks — attention q, k, v and output 4h per token (16-bit), with the math kernel
    also its score matrices heads × s² (planner/memory.py math_inference_score_bytes), or the MLP
    hidden (SwiGLU: two projections and their product 3f; GELU: fc1 output and GELU output 2f). A fused
    kernel (flash / cuDNN / memory-efficient) has no s² matrix. Images add their 16-bit pixels."""
    _, h, f, heads, swiglu = _tower_dims(model, tower)
    seq = tokens(model, tower)
    attn = 4 * h / tp * seq * ACTIVATION_BYTES
    if attention in memory.SCORE_MATRIX_KERNELS:
        attn += memory.MATH_INFERENCE_SCORE_BYTES[memory.math_path(attention, stack)] * heads / tp * seq * seq
    mlp = (3 * f if swiglu else 2 * f) / tp * seq * ACTIVATION_BYTES
    pixels = 3 * model.vision.image_size**2 * ACTIVATION_BYTES if tower == "image" else 0.0
    return seq * 2 * h * ACTIVATION_BYTES + max(attn, mlp) + pixels


# ----------------------------------------------------------------------------------- memory
@dataclass(frozen=True)
class ReplicaMemory:
    """Per GPU of one replica that embeds both images and texts (both towers resident)."""

    weights_bytes: float
    activations_bytes: float  # the larger of an image batch and a text batch
    reserved_bytes: float
    total_bytes: float
    hbm_bytes: float

    @property
    def fits(self) -> bool:
        return self.total_bytes <= self.hbm_bytes


def replica_memory(
    model: ModelSpec,
    hw: HardwareSpec,
    batch: int,
    precision: str,
    tp: int,
    attention: str = "flash",
    stack: str = "eager",
) -> ReplicaMemory:
    weights = count_params(model).total * WEIGHT_BYTES[precision] / tp
    act = batch * max(
        activation_bytes_per_sample(model, "image", tp, attention, stack),
        activation_bytes_per_sample(model, "text", tp, attention, stack),
    )
    reserved = hw.memory_reserved_gib.value * GIB
    return ReplicaMemory(weights, act, reserved, weights + act + reserved, hw.hbm_bytes)


def max_batch_that_fits(model: ModelSpec, hw: HardwareSpec, precision: str, tp: int, **mem_kw: str) -> int:
    """Largest batch whose replica memory fits (memory is linear in the batch); 0 if none. `mem_kw`
    (attention, stack) goes to replica_memory, whose defaults they keep."""
    m0 = replica_memory(model, hw, 0, precision, tp, **mem_kw)
    per = replica_memory(model, hw, 1, precision, tp, **mem_kw).total_bytes - m0.total_bytes
    room = m0.hbm_bytes - m0.total_bytes
    if room < per:
        return 0
    return int(min(MAX_BATCH, math.floor(room / per)))


def tp_choices(model: ModelSpec, hw: HardwareSpec) -> list[int]:
    """Tensor-parallel sizes a replica can use: divisors of the GPUs of one node (TP stays on the
    scale-up fabric) that split the heads and MLP of both towers evenly."""
    out = []
    for t in range(1, hw.gpus_per_node + 1):
        if hw.gpus_per_node % t:
            continue
        dims = [_tower_dims(model, "image"), _tower_dims(model, "text")]
        if all(heads % t == 0 and f % t == 0 for _, _, f, heads, _ in dims):
            out.append(t)
    return out


def _fmt_gib(x: float) -> str:
    return f"{x / GIB:,.2f} GiB"


# ----------------------------------------------------------------------------------- choosing
@dataclass(frozen=True)
class Setting:
    tp: int
    batch: int
    chosen: tuple[str, ...] = ()  # what was chosen and why, for the report


ImageTime = Callable[[int, int], float]  # (batch, tp) → seconds per image batch


def _largest_batch_under(image_s: ImageTime, tp: int, limit: int, p99_s: float) -> int:
    """Largest batch ≤ limit whose image batch time ≤ p99_s (time grows with the batch); 0 if none."""
    if limit < 1 or image_s(1, tp) > p99_s:
        return 0
    lo, hi = 1, limit
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if image_s(mid, tp) <= p99_s:
            lo = mid
        else:
            hi = mid - 1
    return lo


def _per_gpu_rate(image_s: ImageTime, tp: int, batch: int) -> float:
    return batch / image_s(batch, tp) / tp


def choose_setting(
    model: ModelSpec,
    hw: HardwareSpec,
    precision: str,
    batch: int | None,
    p99_ms: float | None,
    **time_kw: str,
) -> Setting:
    """TP size and batch: the smallest TP that holds the model; with --p99-ms, the TP and largest
    batch that meet it at the highest images/s per GPU. Raises InfeasibleError naming the nearest
    feasible setting when the request cannot be met. `time_kw` goes to inference_batch_time_s."""
    peak_flops(hw, precision)  # refuses a precision the hardware lacks, before anything else

    def image_s(b: int, tp: int) -> float:
        return inference_batch_time_s(model, hw, "image", b, precision, tp, **time_kw).total_s

    where = f"{model.name} ({precision}) on {hw.name}"
    tps = tp_choices(model, hw)
    # The attention kernel and stack also set the memory (the math kernel's score matrices).
    mem_kw = {k: time_kw[k] for k in ("attention", "stack") if k in time_kw}
    fit = {t: max_batch_that_fits(model, hw, precision, t, **mem_kw) for t in tps}
    usable = [t for t in tps if fit[t] >= 1]
    if not usable:
        t = tps[-1]
        m = replica_memory(model, hw, 1, precision, t, **mem_kw)
        smaller = [p for p in _precisions_of(hw) if WEIGHT_BYTES[p] < WEIGHT_BYTES[precision]]
        hint = f"use --precision {smaller[0]} or " if smaller else "use "
        raise InfeasibleError(
            f"{where} does not fit even at batch 1 with TP {t} (the most {hw.name} allows): "
            f"{_fmt_gib(m.total_bytes)} per GPU > {_fmt_gib(m.hbm_bytes)} (weights {_fmt_gib(m.weights_bytes)})",
            hint=hint + "a GPU with more memory",
        )
    p99_s = p99_ms / 1e3 if p99_ms is not None else None
    if batch is not None:
        holding = [t for t in usable if fit[t] >= batch]
        if not holding:
            t = max(usable, key=lambda u: fit[u])
            m = replica_memory(model, hw, batch, precision, t, **mem_kw)
            raise InfeasibleError(
                f"batch {batch} of {where} does not fit: {_fmt_gib(m.total_bytes)} per GPU at TP {t} > "
                f"{_fmt_gib(m.hbm_bytes)}",
                hint=f"the largest batch that fits is --batch {fit[t]} (TP {t})",
            )
        if p99_s is None:
            t = holding[0]
            return Setting(t, batch, ("TP: the smallest that holds the batch",) if t > 1 else ())
        meeting = [t for t in holding if image_s(batch, t) <= p99_s]
        if meeting:
            t = max(meeting, key=lambda u: _per_gpu_rate(image_s, u, batch))
            return Setting(
                t, batch, (f"TP: the most images/s per GPU that meets --p99-ms {p99_ms:g} at this batch",)
            )
        best = _best_under_target(image_s, usable, fit, p99_s)
        now = min(image_s(batch, t) for t in holding)
        hint = (
            f"--batch {best.batch} meets it (TP {best.tp})"
            if best is not None
            else _fastest_hint(image_s, hw, precision, usable)
        )
        raise InfeasibleError(
            f"batch {batch} of {where} takes {now * 1e3:,.1f} ms, over --p99-ms {p99_ms:g}", hint=hint
        )
    if p99_s is None:
        t = usable[0]
        b = min(DEFAULT_BATCH, fit[t])
        why = f"batch: the default {DEFAULT_BATCH}" + ("" if b == DEFAULT_BATCH else ", clipped to what fits")
        chosen = (why,) + (("TP: the smallest that holds the model",) if t > 1 else ())
        return Setting(t, b, chosen)
    best = _best_under_target(image_s, usable, fit, p99_s)
    if best is None:
        raise InfeasibleError(
            f"no batch of {where} meets --p99-ms {p99_ms:g}",
            hint=_fastest_hint(image_s, hw, precision, usable),
        )
    return best


def _best_under_target(
    image_s: ImageTime, usable: list[int], fit: dict[int, int], p99_s: float
) -> Setting | None:
    options = []
    for t in usable:
        b = _largest_batch_under(image_s, t, fit[t], p99_s)
        if b >= 1:
            options.append((_per_gpu_rate(image_s, t, b), -t, t, b))
    if not options:
        return None
    _, _, t, b = max(options)
    why = f"batch and TP: the most images/s per GPU within --p99-ms {p99_s * 1e3:g}"
    capped = ("batch: capped by memory",) if b == fit[t] else ()
    return Setting(t, b, (why, *capped))


def _fastest_hint(image_s: ImageTime, hw: HardwareSpec, precision: str, usable: list[int]) -> str:
    t = min(usable, key=lambda u: image_s(1, u))
    ms = image_s(1, t) * 1e3
    faster = [p for p in _precisions_of(hw) if WEIGHT_BYTES[p] < WEIGHT_BYTES[precision]]
    alt = f", or --precision {faster[0]}" if faster else ""
    return f"the fastest is batch 1 at TP {t}: {ms:,.1f} ms; use --p99-ms {math.ceil(ms * 10) / 10:g}{alt}"


# ----------------------------------------------------------------------------------- prices
@dataclass(frozen=True)
class Price:
    pricing: str  # on_demand | spot | committed | on_prem
    usd_per_gpu_hour: float
    usd_per_m_images: float
    usd_per_m_texts: float
    source: str


def gpu_hour_prices(offering: OfferingSpec, hw: HardwareSpec) -> list[tuple[str, float, str]]:
    """(pricing, $/GPU-hour, source) for every price the offering has: node price / GPUs per node."""
    g = offering.gpus_per_node
    out = []
    for pricing, p in (
        ("on_demand", offering.on_demand_usd_per_node_hour),
        ("spot", offering.spot_usd_per_node_hour),
        ("committed", offering.committed_usd_per_node_hour),
    ):
        if p is not None:
            term = f", {offering.committed_term}" if pricing == "committed" else ""
            out.append((pricing, p.value / g, f"{p.source} ({p.observed}{term})"))
    if offering.on_prem is not None:
        usd = offering.on_prem.usd_per_node_hour(hw.node_power_kw.value, offering.pue.value)
        out.append(("on_prem", usd / g, "capex/(years·8766·utilization) + opex + power·PUE"))
    return out


# ----------------------------------------------------------------------------------- one row
@dataclass(frozen=True)
class Fleet:
    rps: float
    replicas: int
    gpus: int
    nodes: int
    utilization: float  # offered load / fleet capacity


@dataclass(frozen=True)
class ServePoint:
    """One model on one hardware or offering at one setting."""

    model: str
    display_name: str
    target: str  # the offering's or hardware's name
    hardware: str
    offering: str | None
    precision: str
    stack: str
    attention: str
    tp: int
    batch: int
    image: BatchTime
    text: BatchTime
    memory: ReplicaMemory
    images_per_s_per_gpu: float
    texts_per_s_per_gpu: float
    gpu_hours_per_m_images: float
    gpu_hours_per_m_texts: float
    kwh_per_m_images: float
    pue: float
    prices: tuple[Price, ...]
    fleet: Fleet | None
    imagenet_top1: float | None
    avg27_top1: float | None
    accuracy_source: str | None
    chosen: tuple[str, ...]
    sources: dict[str, str] = field(default_factory=dict)
    pareto: bool = False

    def cost_per_m_images(self) -> tuple[float, str]:
        """The cost the Pareto front and the plot use: on-demand (or on-prem) $, else GPU-hours."""
        for p in self.prices:
            if p.pricing in ("on_demand", "on_prem"):
                return p.usd_per_m_images, "USD"
        return self.gpu_hours_per_m_images, "GPU-hours"


def serve_point(
    model: ModelSpec,
    hw: HardwareSpec,
    offering: OfferingSpec | None,
    *,
    precision: str = "bf16",
    batch: int | None = None,
    p99_ms: float | None = None,
    rps: float | None = None,
    stack: str = "eager",
    attention: str = "flash",
) -> ServePoint:
    s = choose_setting(model, hw, precision, batch, p99_ms, stack=stack, attention=attention)
    img = inference_batch_time_s(model, hw, "image", s.batch, precision, s.tp, stack, attention)
    txt = inference_batch_time_s(model, hw, "text", s.batch, precision, s.tp, stack, attention)
    mem = replica_memory(model, hw, s.batch, precision, s.tp, attention, stack)
    ips = s.batch / img.total_s / s.tp
    tps = s.batch / txt.total_s / s.tp
    gh_img = 1e6 / ips / 3600.0
    gh_txt = 1e6 / tps / 3600.0
    pue = offering.pue.value if offering is not None else 1.0
    # Energy: the node's full-load power (host included) shared by its GPUs, times PUE.
    kwh = gh_img * hw.node_power_kw.value / hw.gpus_per_node * pue
    prices = tuple(
        Price(pricing, usd, gh_img * usd, gh_txt * usd, src)
        for pricing, usd, src in (gpu_hour_prices(offering, hw) if offering is not None else [])
    )
    fleet = None
    if rps is not None:
        per_replica = s.batch / img.total_s
        replicas = max(1, math.ceil(rps / per_replica))
        gpus = replicas * s.tp
        fleet = Fleet(rps, replicas, gpus, math.ceil(gpus / hw.gpus_per_node), rps / (replicas * per_replica))
    pub = model.published
    sources = {
        "peak": (hw.bf16_dense_tflops if precision == "bf16" else hw.fp8_dense_tflops).source,  # type: ignore[union-attr]
        "matmul": hw.matmul.tflops.source,
        "attention": hw.attention.flash_fwd_tflops.source,
        "hbm_achieved_tbps": hw.hbm_achieved_tbps.source,
        "hbm_tbps": hw.hbm_tbps.source,
        "hbm_gib": hw.hbm_gib.source,
        "node_power_kw": hw.node_power_kw.source,
    }
    if offering is not None:
        sources["pue"] = offering.pue.source
    return ServePoint(
        model=model.name,
        display_name=model.display_name,
        target=offering.name if offering is not None else hw.name,
        hardware=hw.name,
        offering=offering.name if offering is not None else None,
        precision=precision,
        stack=stack,
        attention=attention,
        tp=s.tp,
        batch=s.batch,
        image=img,
        text=txt,
        memory=mem,
        images_per_s_per_gpu=ips,
        texts_per_s_per_gpu=tps,
        gpu_hours_per_m_images=gh_img,
        gpu_hours_per_m_texts=gh_txt,
        kwh_per_m_images=kwh,
        pue=pue,
        prices=prices,
        fleet=fleet,
        imagenet_top1=pub.imagenet_zero_shot_top1 if pub else None,
        avg27_top1=pub.zero_shot_avg27_top1 if pub else None,
        accuracy_source=pub.accuracy_source if pub else None,
        chosen=s.chosen,
        sources=sources,
    )


def mark_pareto(points: list[ServePoint]) -> list[ServePoint]:
    """Flag, per hardware/offering, the points no other point beats on both cost per million images
    (lower) and ImageNet-1K top-1 (higher). Points without a published accuracy are never on it."""
    from dataclasses import replace

    out = []
    for p in points:
        on = False
        if p.imagenet_top1 is not None:
            c = p.cost_per_m_images()[0]
            on = not any(
                q is not p
                and q.target == p.target
                and q.imagenet_top1 is not None
                and q.cost_per_m_images()[0] <= c
                and q.imagenet_top1 >= p.imagenet_top1
                and (q.cost_per_m_images()[0] < c or q.imagenet_top1 > p.imagenet_top1)
                for q in points
            )
        out.append(replace(p, pareto=on))
    return out


# ----------------------------------------------------------------------------------- routing
RouteMode = Literal["cascade", "split"]
# The seed's claim to check: "7–8× speedup" from hybrid routing.
SEED_ROUTE_SPEEDUPS = (7.0, 8.0)


@dataclass(frozen=True)
class Route:
    """Hybrid routing on one hardware/offering: a share of the images also (cascade) or instead
    (split) goes to the large encoder. Costs in GPU-seconds per image, so $ scale the same."""

    target: str
    small: str
    large: str
    mode: str
    share: float
    small_gpu_s: float
    large_gpu_s: float
    blended_gpu_s: float
    cost_ratio: float  # large / small, per image
    speedup_vs_large: float
    blended_images_per_s_per_gpu: float
    blended_usd_per_m_images: float | None
    large_usd_per_m_images: float | None
    share_for_speedup: dict[str, float | None]  # "7x" → share of traffic for that speedup


def blended_gpu_s(small_s: float, large_s: float, share: float, mode: str) -> float:
    """cascade: every image through the small encoder, the share also through the large one:
    s + p·L. split: a free router sends the share to the large encoder only: (1−p)·s + p·L."""
    if mode == "cascade":
        return small_s + share * large_s
    return (1.0 - share) * small_s + share * large_s


def share_for_speedup(small_s: float, large_s: float, speedup: float, mode: str) -> float | None:
    """The share p at which large / blended = speedup; None when no share in [0, 1] reaches it."""
    want = large_s / speedup
    p = (want - small_s) / large_s if mode == "cascade" else (want - small_s) / (large_s - small_s)
    return p if 0.0 <= p <= 1.0 else None


def route(small: ServePoint, large: ServePoint, share: float, mode: str) -> Route:
    s = 1.0 / small.images_per_s_per_gpu
    big = 1.0 / large.images_per_s_per_gpu
    blended = blended_gpu_s(s, big, share, mode)
    usd_small = next(
        (p.usd_per_gpu_hour for p in small.prices if p.pricing in ("on_demand", "on_prem")), None
    )
    blended_usd = blended * 1e6 / 3600.0 * usd_small if usd_small is not None else None
    large_usd = big * 1e6 / 3600.0 * usd_small if usd_small is not None else None
    shares = {f"{x:g}x": share_for_speedup(s, big, x, mode) for x in SEED_ROUTE_SPEEDUPS}
    return Route(
        target=small.target,
        small=small.model,
        large=large.model,
        mode=mode,
        share=share,
        small_gpu_s=s,
        large_gpu_s=big,
        blended_gpu_s=blended,
        cost_ratio=big / s,
        speedup_vs_large=big / blended,
        blended_images_per_s_per_gpu=1.0 / blended,
        blended_usd_per_m_images=blended_usd,
        large_usd_per_m_images=large_usd,
        share_for_speedup=shares,
    )
