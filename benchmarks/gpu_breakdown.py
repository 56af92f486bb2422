"""Where the planner's time model is wrong on one GPU: measured device time by kind of kernel beside
the planner's raw terms (hardware profile without `compute_scale`).

    python benchmarks/gpu_breakdown.py                           # on the GPU machine, repository root
    python benchmarks/gpu_breakdown.py --json-out breakdown.json # also every figure as JSON
    python benchmarks/gpu_breakdown.py --parts 1,3               # some parts only
    python benchmarks/gpu_breakdown.py --smoke                   # anywhere: CPU, tiny model (tests)

Needs torch, a CUDA device and the planner's dependencies (pydantic); designed to finish well under
4 minutes on one H100 (`--budget-s`, default 150: a row not started by then is skipped and says so;
the JSON is rewritten after every row, so a run cut short keeps what it measured). Parts:

1. Training step by device-time class, EVA02-CLIP-B/16 (micro-batch 256) and L/14 (128), and
   OpenCLIP's ViT-B/32 (256) on `amp` only (PROBES), stacks
   `amp` (fp32 weights under bf16 autocast, fused AdamW), `eager` (the model cast to bf16, no
   autocast, fused AdamW, no DeepSpeed), `deepspeed` (what `evaplan launch` runs: DeepSpeed ZeRO-0
   bf16, benchmarks/gpu_check.py deepspeed_step; on a CUDA device with deepspeed importable; beside
   `eager` it isolates DeepSpeed's per-step work) and `compile` (amp + evaclip.speed.compile_blocks): wall per
   step from CUDA events over unprofiled steps, then torch.profiler (CUDA activity) over
   PROFILED_STEPS steps; kernel time summed by class from kernel names (`classify_kernel`), idle =
   wall − kernel time; beside planner.evaluate.step_terms for the same one-GPU layout.
2. Serving: the vision tower's forward (eval, inference_mode, bf16 weights) at batch 1, 8, 32, 128,
   eager and compiled: images/s beside planner.serve.serve_point.
3. Host time per kernel: a loop of tiny pointwise ops (CPU wall per call, one sync at the end), eager
   and through torch.compile, beside planner.ops' host constants.
4. GEMM rates at the Linear shapes (forward) of one micro-batch: bf16 TFLOP/s beside
   planner.ops.gemm_rate_flops.

Parts run cheapest first (3, 4, 1, 2) so a tight budget loses the serving rows, not the host and
GEMM figures. `--smoke` runs every part on the CPU with the `eva-clip-debug` profile, batch 2, one
step, compiling with the `aot_eager` backend (no C++ toolchain, seconds) and without the profiler's
CUDA class split (the rows carry the CPU wall only): it exercises the code path, not the numbers.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import json
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))  # gpu_check, beside this script

from gpu_check import (  # noqa: E402
    DEFAULT_MICRO_BATCH,
    DEVICE_PROFILES,
    MODELS,
    deepspeed_step,
    load_model_spec,
    plain_torch_step,
)

STACKS = ("amp", "eager", "deepspeed", "compile")
# Part 1 also times OpenCLIP's ViT-B/32 on the `amp` stack (OpenCLIP's own layout: fp32 weights under
# autocast) at micro-batch 256, as LAION's B/32 runs used (profiles/published_runs.yaml scaling-b-32-*):
# the bundled B/32 runs on A100 and H100 (LAION's, NeMo's) take about twice the device time the planner
# prices while its B/16 and larger runs are close (docs/validation.md), and a narrow model (text width
# 512, vision 768, 50 vision tokens) is where a per-kernel class the planner misprices shows most. One
# row (about 10 s on an H100), after the two main models' amp rows.
PROBES = {"amp": (("openclip-vit-b32", 256),)}
# `deepspeed`: what `evaplan launch` runs (gpu_check.deepspeed_step), priced by the planner as its
# `eager` stack with DeepSpeed's unfused optimizer wrapper; beside the `eager` row (the same bf16
# model on plain torch) it isolates what DeepSpeed adds per step. On a CUDA device only.
PLANNER_STACK = {"deepspeed": "eager"}
SERVE_BATCHES = (1, 8, 32, 128)
WARMUP_STEPS = 3  # the compile stack compiles on the first; the caching allocator settles after
TIMED_STEPS = 5
PROFILED_STEPS = 3
HOST_CALLS = 2000
# Run order: cheap parts first, so that the budget cuts the expensive compiled serving rows first.
RUN_ORDER = (3, 4, 1, 2)
# Kernel classes from kernel names, first match wins: attention before gemm because the
# memory-efficient SDPA kernels are CUTLASS ("fmha_cutlassF_...") and cuDNN's are "sm90_" too;
# optimizer (torch's multi-tensor-apply kernels: fused AdamW, clip_grad_norm_'s foreach norm and
# scale) apart from the rest because the planner prices it in step_overhead_s, not per micro-batch.
KERNEL_CLASSES = (
    ("attention", ("flash", "fmha", "attention", "sdpa")),
    ("gemm", ("gemm", "cutlass", "xmma", "nvjet", "cublas", "sm90_", "sm80_", "ampere_")),
    ("optimizer", ("multi_tensor_apply", "adam")),
    ("copy", ("copy", "cat", "index", "gather", "scatter", "memcpy", "memset")),
)
CLASSES = ("gemm", "attention", "copy", "elementwise", "optimizer")


def classify_kernel(name: str) -> str:
    """gemm, attention, optimizer, copy or elementwise (everything else) for a CUDA kernel name.
    Inductor names a fused kernel after its ATen ops ("triton_poi_fused__to_copy_add_mul_0"), so the
    copy/elementwise split is by name only: compare their sum, as the planner's memory_bound_s is."""
    low = name.lower()
    for cls, keys in KERNEL_CLASSES:
        if any(k in low for k in keys):
            return cls
    return "elementwise"


def class_totals(kernels: Iterable[tuple[str, float]]) -> dict[str, Any]:
    """Seconds and kernel counts by class from (name, seconds) pairs, one pair per kernel run."""
    secs = dict.fromkeys(CLASSES, 0.0)
    counts = dict.fromkeys(CLASSES, 0)
    for name, s in kernels:
        cls = classify_kernel(name)
        secs[cls] += s
        counts[cls] += 1
    return {"seconds": secs, "counts": counts}


# --------------------------------------------------------------------------- setup and timing
@dataclass
class Setup:
    """What this run measures on: the device, the models and sizes, the planner's hardware profile."""

    device: Any  # torch.device
    device_name: str
    hardware: str
    smoke: bool
    models: tuple[str, ...]
    micro_batch: dict[str, int]
    # stack → (model, micro-batch) rows timed on that stack besides `models`
    probes: dict[str, tuple[tuple[str, int], ...]]
    serve_batches: tuple[int, ...]
    compile_backend: str
    deadline: float
    json_out: Path | None = None
    results: dict[str, Any] = field(default_factory=dict)

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    def time_left(self) -> float:
        return self.deadline - time.monotonic()


def make_setup(args: argparse.Namespace) -> Setup:
    import torch

    if args.smoke:
        device, name = torch.device("cpu"), "cpu (smoke)"
        models, mb, batches, backend = ("eva-clip-debug",), {"eva-clip-debug": 2}, (1, 2), "aot_eager"
        # The probe's code path with the tiny model at batch 1 (what a probe row runs, not its size).
        probes = {stack: tuple(("eva-clip-debug", 1) for _ in rows) for stack, rows in PROBES.items()}
    else:
        device, name = torch.device("cuda"), torch.cuda.get_device_name(0)
        models, mb, batches, backend = MODELS, dict(DEFAULT_MICRO_BATCH), SERVE_BATCHES, "inductor"
        probes = dict(PROBES)
    # A GPU's profile from its name as benchmarks/gpu_check.py maps it; the smoke run predicts an H100.
    hardware = args.hardware or next((p for key, p in DEVICE_PROFILES if key in name), "h100-sxm")
    out = Path(args.json_out) if args.json_out else None
    return Setup(device, name, hardware, args.smoke, models, mb, probes, batches, backend, 0.0, out)


def sync(setup: Setup) -> None:
    import torch

    if setup.cuda:
        torch.cuda.synchronize()


def timed(setup: Setup, fn: Callable[[], Any], n: int) -> float:
    """Seconds per call of `fn` over `n` calls: CUDA events on a GPU (device time between the first
    launch and the last kernel's end, with no host sync inside), the CPU clock otherwise."""
    import torch

    sync(setup)
    if not setup.cuda:
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        return (time.perf_counter() - t0) / n
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(n):
        fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / 1e3 / n


def timed_for(setup: Setup, fn: Callable[[], Any], seconds: float, most: int, least: int) -> float:
    """Seconds per call of `fn`, timed over about `seconds` of calls (between `least` and `most`,
    one in a smoke run): enough calls that launch jitter averages out, few enough for the budget."""
    once = timed(setup, fn, 1)
    n = 1 if setup.smoke else int(min(most, max(least, seconds / max(once, 1e-7))))
    return timed(setup, fn, n)


def free_memory(setup: Setup) -> None:
    """Release the last row's model: Dynamo's cache of a compiled row can keep its graphs (and what
    they reference) alive until reset; every compiled row compiles afresh anyway (static shapes)."""
    import torch

    if "torch._dynamo" in sys.modules:
        sys.modules["torch._dynamo"].reset()
    gc.collect()
    if setup.cuda:
        torch.cuda.empty_cache()


def fresh_compiler() -> None:
    """Forget earlier compiled graphs, and allow many: every block of both towers and models shares
    one code object, and each batch size is a static-shape recompile; past Dynamo's recompile limit
    (8) a block would silently run eager and a compiled row would measure eager code."""
    import torch._dynamo as dynamo

    dynamo.reset()
    for name in ("recompile_limit", "cache_size_limit", "accumulated_recompile_limit"):
        if hasattr(dynamo.config, name):
            setattr(dynamo.config, name, max(getattr(dynamo.config, name), 256))


def raw_hardware(name: str, gpus: int | None = 1) -> Any:
    """The hardware profile as the raw per-operation model sees it: no compute_scale (as
    planner/validation.py check_run predicts with compute_scale=None), `gpus` GPUs per node (a
    one-GPU run is a node of one, check_run's `_hardware_for`)."""
    from planner.profiles import load_hardware

    update: dict[str, Any] = {"compute_scale": None}
    if gpus is not None:
        update["gpus_per_node"] = gpus
    return load_hardware(name).model_copy(update=update)


def run_row(setup: Setup, part: str, label: str, fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """One row: measured and predicted figures, or why there are none (over budget, an error: one
    failing row must not hide the others). The JSON is rewritten after each row."""
    if setup.time_left() <= 0:
        row: dict[str, Any] = {"label": label, "skipped": "over --budget-s before this row started"}
    else:
        t0 = time.monotonic()
        try:
            row = {"label": label, **fn()}
        except Exception as e:  # report and go on
            row = {"label": label, "error": f"{type(e).__name__}: {' '.join(str(e).split())[:300]}"}
        row["row_s"] = round(time.monotonic() - t0, 2)
        free_memory(setup)
    setup.results.setdefault(part, []).append(row)
    if "error" in row or "skipped" in row:
        print(f"  {label}: {row.get('error') or row.get('skipped')}", flush=True)
    write_json(setup)
    return row


def write_json(setup: Setup) -> None:
    if setup.json_out is None:
        return
    import torch

    payload = {
        "device": setup.device_name,
        "hardware": setup.hardware,
        "torch": torch.__version__,
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "smoke": setup.smoke,
        "prediction": "planner raw model: hardware profile without compute_scale, one GPU per node",
        "parts": setup.results,
    }
    tmp = setup.json_out.with_suffix(".tmp")
    tmp.write_text(json.dumps(payload, indent=1, default=str) + "\n")
    tmp.replace(setup.json_out)


def ratios(
    measured: dict[str, Any], predicted: dict[str, Any], pairs: dict[str, tuple[str, str]]
) -> dict[str, Any]:
    """measured[m] / predicted[p] for each ratio name → (m, p); None where either is missing or 0."""
    out: dict[str, Any] = {}
    for name, (m, p) in pairs.items():
        a, b = measured.get(m), predicted.get(p)
        out[name] = a / b if a is not None and b else None
    return out


def compared(
    measured: dict[str, Any], predicted: dict[str, Any], pairs: dict[str, tuple[str, str]], **what: Any
) -> dict[str, Any]:
    """One row of any part: what was measured (`what`: model, stack, batch, shape ...), the
    measurement, the planner's prediction and their ratios."""
    return {**what, "measured": measured, "predicted": predicted, "ratio": ratios(measured, predicted, pairs)}


# --------------------------------------------------------------------------- part 1: training
def planner_train(setup: Setup, model_name: str, micro_batch: int, stack: str) -> dict[str, Any]:
    """planner.evaluate.step_terms, raw, for one GPU at this micro-batch: ZeRO-0, bf16, no activation
    checkpointing, flash attention (SDPA's flash kernel runs for bf16 on an H100), every host core
    loading (validation.plan_for's reading of a run that does not state its workers; the measured
    steps load nothing)."""
    import numpy as np

    from planner import evaluate as ev
    from planner.layout import Layout
    from planner.profiles import load_model
    from planner.spec import ParallelPlan, TrainingSpec
    from planner.terms import Term

    # priced stepping what gpu_check._adamw runs on every row, whatever the model's recipe steps
    model, hw = load_model(model_name).stepping("adamw"), raw_hardware(setup.hardware)
    plan = ParallelPlan(
        nodes=1, gpus_per_node=1, zero_stage=0, micro_batch=micro_batch, grad_accum=1, grad_ckpt=False
    )
    training = TrainingSpec(
        samples=1e6,
        global_batch=plan.global_batch,
        image_size=model.vision.image_size,  # the measured images' size
        patch_dropout=0.0,
        precision="bf16",
        stack=PLANNER_STACK.get(stack, stack),
        attention="flash",
        # gpu_check's torch.optim.AdamW(fused=True) on the plain-torch (amp) rows; the others step their own
        optimizer_impl="fused" if PLANNER_STACK.get(stack, stack) == "amp" else None,
        loader_workers=max(1, int(hw.host_cpu_cores.value)),
    )
    st = ev.step_terms(model, hw, Layout.of(plan, training))
    keys = ("gemm_s", "attention_s", "memory_bound_s", "host_s", "device_s", "compute_s")
    out = {k: float(st[k]) for k in keys}
    out.update(
        step_overhead_s=float(st["step_overhead_s"]),
        data_loading_s=float(st["data_loading_s"]),
        step_s=float(st["step_s"]),
        kernels=float(st["kernels"]),
    )
    # The eager stack's step overhead includes DeepSpeed's unfused wrapper, which the plain-torch
    # `eager` row does not run: its optimizer alone is the same term with that flag off.
    t = st["terms"]["step_overhead"]
    if "deepspeed_wrapper" in t.inputs and stack != "deepspeed":
        out["optimizer_s"] = float(
            np.asarray(Term(t.formula, {**t.inputs, "deepspeed_wrapper": False}).value)
        )
    else:
        out["optimizer_s"] = out["step_overhead_s"]
    out["device_plus_optimizer_s"] = out["compute_s"] + out["optimizer_s"]
    return out


def train_step_fn(setup: Setup, spec: Any, micro_batch: int, stack: str) -> tuple[Callable[[], Any], Any]:
    """One training step of this stack on random tensors already on the device, and the compile
    state (evaclip.speed.CompileState; None uncompiled)."""
    import torch

    from evaclip.model import build_model
    from evaclip.speed import compile_blocks

    torch.manual_seed(0)
    dev, size = setup.device, spec.vision.image_size
    images = torch.randn(micro_batch, 3, size, size, device=dev, dtype=torch.bfloat16)
    tokens = torch.randint(1, 49406, (micro_batch, spec.text.context_length), device=dev)
    tokens[:, -1] = 49407  # end-of-text, where the text tower pools
    model = build_model(spec).to(dev)
    if stack == "deepspeed":
        return deepspeed_step(model, images, tokens, micro_batch), None  # casts the model to bf16
    if stack == "eager":
        model = model.to(torch.bfloat16)  # 16-bit weights, the bundled trainer's layout without DeepSpeed
    state = None
    if stack == "compile":
        fresh_compiler()
        state = compile_blocks(
            model, backend=setup.compile_backend, warn=lambda line: print(f"  warning: {line}")
        )
    return plain_torch_step(model, images, tokens, autocast=stack != "eager"), state


def profile_kernels(setup: Setup, fn: Callable[[], Any], n: int) -> list[tuple[str, float]]:
    """(kernel name, seconds) of every CUDA kernel, memcpy and memset run by `n` calls of `fn`. Read
    from the profiler's device-side events (not key_averages: with CPU events a launch's runtime call
    also carries its kernel's time, which would count it twice)."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(n):
            fn()
        torch.cuda.synchronize()
    cuda = torch.autograd.DeviceType.CUDA
    return [(e.name, e.time_range.elapsed_us() * 1e-6) for e in prof.events() if e.device_type == cuda]


def measure_train(setup: Setup, spec: Any, micro_batch: int, stack: str) -> dict[str, Any]:
    import torch

    step, state = train_step_fn(setup, spec, micro_batch, stack)
    warmup, timed_steps = (0, 1) if setup.smoke else (WARMUP_STEPS, TIMED_STEPS)
    t0 = time.monotonic()
    for _ in range(warmup):
        step()
    sync(setup)
    # Described after the warm-up: a block that failed to compile has fallen back to eager by then.
    measured: dict[str, Any] = {
        "warmup_s": time.monotonic() - t0,
        "compile": state.describe() if state is not None else "off",
    }
    measured["wall_s"] = timed(setup, step, timed_steps)
    if not setup.cuda:
        # No CUDA kernels to classify: the row carries the CPU's wall per step alone.
        measured["note"] = "CPU smoke run: wall only, no kernel classes"
        return measured
    kernels = profile_kernels(setup, step, PROFILED_STEPS)
    if not kernels:  # a profiler without CUPTI records no device events: say so, not "all idle"
        raise RuntimeError("torch.profiler recorded no CUDA kernels (CUPTI unavailable?)")
    totals = class_totals(kernels)
    per_step = {k: v / PROFILED_STEPS for k, v in totals["seconds"].items()}
    measured.update({f"{k}_s": v for k, v in per_step.items()})
    measured["copy_elementwise_s"] = per_step["copy"] + per_step["elementwise"]
    measured["kernel_s"] = sum(per_step.values())
    measured["idle_s"] = measured["wall_s"] - measured["kernel_s"]
    measured["kernels"] = len(kernels) / PROFILED_STEPS
    # The planner counts a micro-batch's kernels; the optimizer's are in its step overhead.
    measured["microbatch_kernels"] = (len(kernels) - totals["counts"]["optimizer"]) / PROFILED_STEPS
    measured["kernels_by_class"] = {k: v / PROFILED_STEPS for k, v in totals["counts"].items()}
    measured["peak_mem_bytes"] = torch.cuda.max_memory_allocated()
    return measured


TRAIN_RATIOS = {
    "gemm": ("gemm_s", "gemm_s"),
    "attention": ("attention_s", "attention_s"),
    "copy+elementwise": ("copy_elementwise_s", "memory_bound_s"),
    "optimizer": ("optimizer_s", "optimizer_s"),
    "kernels": ("microbatch_kernels", "kernels"),
    "wall/device+optimizer": ("wall_s", "device_plus_optimizer_s"),
    "wall/step": ("wall_s", "step_s"),
}


def train_rows(setup: Setup) -> None:
    import torch

    # Stacks outer: the two compiled rows, which spend most of their time compiling, come last.
    for stack in STACKS:
        if stack == "deepspeed" and not setup.cuda:
            continue  # DeepSpeed's CPU accelerator needs a process group; the smoke run skips it
        rows = [(name, setup.micro_batch[name]) for name in setup.models] + list(setup.probes.get(stack, ()))
        for name, mb in rows:
            spec = load_model_spec(name)

            def row(name: str = name, spec: Any = spec, mb: int = mb, stack: str = stack) -> dict[str, Any]:
                if setup.cuda:
                    torch.cuda.reset_peak_memory_stats()
                measured = measure_train(setup, spec, mb, stack)
                predicted = planner_train(setup, name, mb, stack)
                return compared(measured, predicted, TRAIN_RATIOS, model=name, stack=stack, micro_batch=mb)

            r = run_row(setup, "train", f"{name} {stack} mb {mb}", row)
            if "measured" in r:
                print(train_text(r), flush=True)


def _ms(x: float | None) -> str:
    return f"{x * 1e3:10.2f}" if x is not None else f"{'n/a':>10}"


def _ratio(x: float | None) -> str:
    return f"{x:8.2f}" if x is not None else f"{'n/a':>8}"


def train_text(r: dict[str, Any]) -> str:
    """One training row: measured ms per step by class beside the planner's raw term."""
    m, p, q = r["measured"], r["predicted"], r["ratio"]
    lines = [f"\n{r['label']} (compile: {m.get('compile')}; warm-up {m['warmup_s']:.1f} s)"]
    lines.append(f"  {'class':28} {'measured ms':>11} {'planner ms':>11} {'meas/pred':>9}")
    rows = [
        ("gemm", m.get("gemm_s"), p["gemm_s"], q["gemm"]),
        ("attention", m.get("attention_s"), p["attention_s"], q["attention"]),
        (
            "copy+elementwise / memory",
            m.get("copy_elementwise_s"),
            p["memory_bound_s"],
            q["copy+elementwise"],
        ),
        ("  (copy)", m.get("copy_s"), None, None),
        ("  (elementwise)", m.get("elementwise_s"), None, None),
        ("optimizer / step overhead", m.get("optimizer_s"), p["optimizer_s"], q["optimizer"]),
        ("idle (wall − kernels) / host", m.get("idle_s"), p["host_s"], None),
        ("wall / device+optimizer", m["wall_s"], p["device_plus_optimizer_s"], q["wall/device+optimizer"]),
        ("wall / step_s", m["wall_s"], p["step_s"], q["wall/step"]),
    ]
    for label, a, b, ratio in rows:
        lines.append(f"  {label:28} {_ms(a)} {_ms(b)} {_ratio(ratio)}")
    kern = m.get("microbatch_kernels")
    lines.append(
        f"  {'kernels (no optimizer)':28} {f'{kern:.0f}' if kern is not None else 'n/a':>11} {p['kernels']:>11.0f} "
        f"{_ratio(q['kernels'])}"
    )
    if "note" in m:
        lines.append(f"  ({m['note']})")
    return "\n".join(lines)


# --------------------------------------------------------------------------- part 2: serving
def planner_serve(setup: Setup, model_name: str, batch: int, stack: str) -> dict[str, Any]:
    """planner.serve.serve_point as serving_validation.check_measurement calls it, raw hardware."""
    from planner.profiles import load_model
    from planner.serve import serve_point

    point = serve_point(
        load_model(model_name),
        raw_hardware(setup.hardware, gpus=None),
        None,
        precision="bf16",
        batch=batch,
        stack=PLANNER_STACK.get(stack, stack),
        attention="flash",
    )
    img = point.image
    return {
        "images_per_s": batch / img.total_s,
        "batch_s": img.total_s,
        "gemm_s": img.gemm_s,
        "attention_s": img.attention_s,
        "memory_bound_s": img.memory_s,
        "device_s": img.device_s,
        "host_s": img.host_s,
        "kernels": img.kernels,
        "tp": point.tp,
    }


def serve_model(setup: Setup, spec: Any, compiled: bool) -> Callable[[int], float]:
    """The vision tower in bf16, eval mode; returns batch → measured seconds per forward."""
    import torch

    from evaclip.model import build_model
    from evaclip.speed import compile_blocks

    model = build_model(spec).to(setup.device, torch.bfloat16).eval()
    if compiled:
        fresh_compiler()
        compile_blocks(model, backend=setup.compile_backend, warn=lambda line: print(f"  warning: {line}"))
    size = spec.vision.image_size

    def measure(batch: int) -> float:
        images = torch.randn(batch, 3, size, size, device=setup.device, dtype=torch.bfloat16)
        with torch.inference_mode():
            for _ in range(1 if setup.smoke else WARMUP_STEPS):  # the first compiles this shape
                model.visual(images)
            return timed_for(setup, lambda: model.visual(images), 0.5, most=200, least=3)

    return measure


def serve_rows(setup: Setup) -> None:
    # Eager rows of both models first: cheap; the compiled ones recompile per batch size (static
    # shapes), so a tight budget cuts those.
    for compiled in (False, True):
        for name in setup.models:
            serve_group(setup, name, compiled)
            free_memory(setup)  # the model went with serve_group's frame: free it before the next


def serve_group(setup: Setup, name: str, compiled: bool) -> None:
    """One model's vision tower at every serving batch, eager or compiled."""
    stack = "compile" if compiled else "eager"
    labels = [f"{name} {stack} batch {b}" for b in setup.serve_batches]
    if setup.time_left() <= 0:  # run_row records each as skipped without building the model
        for label in labels:
            run_row(setup, "serve", label, dict)
        return
    try:
        measure = serve_model(setup, load_model_spec(name), compiled)
    except Exception as e:  # one model that does not build must not end the run
        for label in labels:
            run_row(setup, "serve", label, lambda e=e: _raise(e))
        return
    for b, label in zip(setup.serve_batches, labels, strict=True):

        def row(b: int = b) -> dict[str, Any]:
            s = measure(b)
            measured = {"batch_s": s, "images_per_s": b / s}
            predicted = planner_serve(setup, name, b, stack)
            pairs = {"images_per_s": ("images_per_s", "images_per_s")}
            return compared(measured, predicted, pairs, model=name, stack=stack, batch=b)

        r = run_row(setup, "serve", label, row)
        if "measured" in r:
            print(serve_text(r), flush=True)


def _raise(e: BaseException) -> dict[str, Any]:
    raise e


def serve_text(r: dict[str, Any]) -> str:
    m, p = r["measured"], r["predicted"]
    return (
        f"  {r['model']:16} {r['stack']:8} batch {r['batch']:>4}: {m['images_per_s']:10.1f} images/s, "
        f"planner {p['images_per_s']:10.1f} (meas/pred {_ratio(r['ratio']['images_per_s']).strip()}); "
        f"ms measured {m['batch_s'] * 1e3:.2f}, planner device {p['device_s'] * 1e3:.2f} "
        f"(gemm {p['gemm_s'] * 1e3:.2f}, attn {p['attention_s'] * 1e3:.2f}, mem {p['memory_bound_s'] * 1e3:.2f}), "
        f"host {p['host_s'] * 1e3:.2f}"
    )


# --------------------------------------------------------------------------- part 3: host time per kernel
def host_per_call(setup: Setup, fn: Callable[[], Any]) -> float:
    """CPU wall per call of `fn` over HOST_CALLS calls, no sync inside: the host's issue cost (the
    GPU runs these tiny kernels faster than the host issues them, so the launch queue never fills)."""
    for _ in range(200):  # warm-up: the allocator's cache, Dynamo's guards, Triton's launcher
        fn()
    sync(setup)
    t0 = time.perf_counter()
    for _ in range(HOST_CALLS):
        fn()
    per_call = (time.perf_counter() - t0) / HOST_CALLS
    sync(setup)
    return per_call


def host_rows(setup: Setup) -> None:
    import torch

    from planner import ops

    predicted_eager = {
        "host_s_per_torch_call": ops.HOST_S_PER_TORCH_CALL,
        "host_s_per_kernel": ops.HOST_S_PER_TORCH_CALL * ops.HOST_CALLS_PER_KERNEL,
    }
    predicted_compiled = {"host_s_per_kernel": ops.HOST_S_PER_COMPILED_KERNEL}
    x = torch.ones(64, device=setup.device)
    xg = torch.ones(64, device=setup.device, requires_grad=True)  # autograd records every op (training)
    cases: list[tuple[str, bool, torch.Tensor]] = [
        ("eager", False, x),
        ("eager autograd", False, xg),
        ("compiled", True, x),
        ("compiled autograd", True, xg),
    ]
    fresh_compiler()
    compiled = torch.compile(lambda t: t * 1.0001, backend=setup.compile_backend, dynamic=False)
    for label, is_compiled, t in cases:

        def row(label: str = label, is_compiled: bool = is_compiled, t: torch.Tensor = t) -> dict[str, Any]:
            fn = (lambda: compiled(t)) if is_compiled else (lambda: torch.mul(t, 1.0001))
            measured = {"host_s_per_call": host_per_call(setup, fn)}
            predicted = predicted_compiled if is_compiled else predicted_eager
            pairs = {"per_kernel": ("host_s_per_call", "host_s_per_kernel")}
            if not is_compiled:
                pairs["per_torch_call"] = ("host_s_per_call", "host_s_per_torch_call")
            return compared(measured, predicted, pairs, case=label)

        r = run_row(setup, "host", f"host {label}", row)
        if "measured" in r:
            pe = r["predicted"]
            extra = (
                f", per torch call {pe['host_s_per_torch_call'] * 1e6:.1f} µs"
                if "host_s_per_torch_call" in pe
                else ""
            )
            print(
                f"  host {label:18}: {r['measured']['host_s_per_call'] * 1e6:7.2f} µs per call; planner per kernel "
                f"{pe['host_s_per_kernel'] * 1e6:.1f} µs{extra} (meas/pred per kernel "
                f"{_ratio(r['ratio']['per_kernel']).strip()})",
                flush=True,
            )


# --------------------------------------------------------------------------- part 4: GEMM rates
def gemm_shapes(spec: Any, micro_batch: int) -> list[tuple[str, int, int, int, int]]:
    """(label, M, N, K, count per micro-batch forward) of every Linear of one micro-batch, from the
    tower shapes planner/ops.py _tower_gemms prices (planner.compute.vision_shape / text_shape):
    with sub-LN q, k and v are projected separately, SwiGLU has two input projections; plus the patch
    embedding (a GEMM over 3·p² inputs)."""
    from planner.compute import text_shape, vision_shape
    from planner.memory import vision_tokens

    v = spec.vision
    patches = (v.image_size // v.patch_size) ** 2
    rows = {
        "vision": micro_batch * int(vision_tokens(patches, 0.0)),
        "text": micro_batch * spec.text.context_length,
    }
    shapes = [("vision patch embed", micro_batch * patches, v.width, 3 * v.patch_size**2, 1)]
    for tower, t in (("vision", vision_shape(spec)), ("text", text_shape(spec))):
        m, h, f = rows[tower], t.width, t.mlp_hidden
        if t.subln:
            shapes.append((f"{tower} q/k/v", m, h, h, 3 * t.layers))
        else:
            shapes.append((f"{tower} qkv", m, 3 * h, h, t.layers))
        shapes.append((f"{tower} attn out", m, h, h, t.layers))
        shapes.append((f"{tower} mlp in", m, f, h, (2 if t.swiglu else 1) * t.layers))
        shapes.append((f"{tower} mlp out", m, h, f, t.layers))
    return shapes


def measure_gemm(setup: Setup, m: int, n: int, k: int) -> float:
    """Seconds per bf16 `x @ wᵀ` (F.linear without bias: the planner puts a bias in the epilogue)."""
    import torch
    import torch.nn.functional as F

    a = torch.randn(m, k, device=setup.device, dtype=torch.bfloat16)
    w = torch.randn(n, k, device=setup.device, dtype=torch.bfloat16)
    for _ in range(3):  # cuBLAS picks its algorithm, the clocks ramp
        F.linear(a, w)
    return timed_for(setup, lambda: F.linear(a, w), 0.1, most=500, least=5)


def gemm_rows(setup: Setup) -> None:
    from planner import ops

    hw = raw_hardware(setup.hardware)
    for name in setup.models:
        spec, mb = load_model_spec(name), setup.micro_batch[name]
        for label, m, n, k, count in gemm_shapes(spec, mb):

            def row(
                m: int = m, n: int = n, k: int = k, count: int = count, label: str = label, name: str = name
            ) -> dict[str, Any]:
                s = measure_gemm(setup, m, n, k)
                flops = 2.0 * m * n * k
                measured = {"seconds": s, "tflops": flops / s / 1e12}
                predicted = {
                    "tflops": float(ops.gemm_rate_flops(hw, m, n, k)) / 1e12,
                    # gemm_time_s: the same rate, or the bytes over HBM where those take longer
                    "seconds": float(ops.gemm_time_s(hw, m, n, k)),
                }
                shape = {"gemm": label, "m": m, "n": n, "k": k, "count_per_forward": count}
                return compared(measured, predicted, {"tflops": ("tflops", "tflops")}, model=name, **shape)

            r = run_row(setup, "gemm", f"{name} {label} {m}x{n}x{k}", row)
            if "measured" in r:
                print(
                    f"  {name:16} {label:20} M {m:>7} N {n:>5} K {k:>5} ×{count:<3}: "
                    f"{r['measured']['tflops']:7.1f} TFLOP/s, planner {r['predicted']['tflops']:7.1f} "
                    f"(meas/pred {_ratio(r['ratio']['tflops']).strip()})",
                    flush=True,
                )


# --------------------------------------------------------------------------- main
PARTS: dict[int, tuple[str, Callable[[Setup], None]]] = {
    1: ("training step by device-time class", train_rows),
    2: ("serving: vision tower forward, images/s", serve_rows),
    3: ("host time per kernel", host_rows),
    4: ("GEMM rates at the micro-batch's Linear shapes", gemm_rows),
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--parts", default="1,2,3,4", help="comma-separated parts to run (see the docstring)")
    p.add_argument(
        "--json-out", default=None, help="write every figure here as JSON (rewritten after each row)"
    )
    p.add_argument("--hardware", default=None, help="hardware profile (default: from the CUDA device name)")
    p.add_argument(
        "--budget-s",
        type=float,
        default=150.0,
        help="start no row after this many seconds (a row started runs on)",
    )
    p.add_argument("--smoke", action="store_true", help="CPU, eva-clip-debug, batch 2, one step (tests)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        wanted = {int(x) for x in args.parts.split(",") if x.strip()}
    except ValueError:
        wanted = set()  # not numbers: refused below with the same line
    parts = sorted(wanted, key=lambda x: RUN_ORDER.index(x) if x in RUN_ORDER else -1)
    if not parts or not set(parts) <= set(PARTS):
        print(f"error: --parts takes some of {sorted(PARTS)}, got {args.parts!r}", file=sys.stderr)
        return 2
    import torch

    if not args.smoke and not torch.cuda.is_available():
        print(
            "error: no CUDA device (this measurement is for a GPU machine; --smoke runs on a CPU)",
            file=sys.stderr,
        )
        return 2
    setup = make_setup(args)
    setup.deadline = time.monotonic() + args.budget_s
    print(
        f"device: {setup.device_name} → planner hardware profile {setup.hardware} (raw: no compute_scale); "
        f"torch {torch.__version__}; compile backend {setup.compile_backend}",
        flush=True,
    )
    t0 = time.monotonic()
    for part in parts:
        title, fn = PARTS[part]
        print(f"\n== part {part}: {title}", flush=True)
        fn(setup)
    print(f"\ntotal {time.monotonic() - t0:.0f} s", flush=True)
    write_json(setup)
    rows = [r for part_rows in setup.results.values() for r in part_rows]
    return 0 if rows and all("error" not in r for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
