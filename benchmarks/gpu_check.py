"""One-GPU check of the bundled trainer against the planner: EVA02-CLIP-B/16 and L/14, 50 steps each.

    python benchmarks/gpu_check.py                 # on the GPU machine, from the repository root
    python benchmarks/gpu_check.py --predict-only  # anywhere: the planner's predictions alone
    python benchmarks/gpu_check.py --memory-ratios # anywhere: benchmarks/results' peaks over them

For each model and each attention path that can run (flash-attn when importable, and SDPA), it trains
on random image-text tensors already on the GPU (data loading is not measured), bf16, no activation
checkpointing, the way the trainer does on a GPU: every block compiled (evaclip.speed regional
compilation, eager fallback), fused AdamW, logit scale clamped after each step, no host
synchronisation inside the timed steps; and prints samples/s, achieved TFLOP/s, MFU and peak memory
next to the planner's predictions, plus the attention kernel in use (which SDPA kernel PyTorch
picks); a short table comes last. `--eager` adds uncompiled rows for comparison. Training uses
DeepSpeed (ZeRO-0, bf16, the config from planner.deepspeed_config) when deepspeed imports,
otherwise plain torch: bf16 autocast, fp32 weights (says which). It needs only torch on the machine: the model profiles are read with
PyYAML when pydantic is missing, and the planner's predictions, which need pydantic, then come from
benchmarks/gpu_check_predictions.json (written by `--predict-only --write-predictions` where the
planner runs; the table says which source it used). Designed to finish well under 4 minutes.

Model FLOPs per sample = 3 × forward FLOPs counted by FlopCounterMode on the real model (meta device);
MFU = achieved model FLOP/s ÷ the hardware profile's bf16 dense peak.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

PREDICTIONS_FILE = REPO / "benchmarks" / "gpu_check_predictions.json"
GENERATED_BY = "python benchmarks/gpu_check.py --predict-only --write-predictions"
MODELS = ("eva02-clip-b16", "eva02-clip-l14")
# Micro-batches that fit an 80 GB H100 without activation checkpointing, with room to spare
# (planner: B/16 ≈ 0.07 GB and L/14 ≈ 0.25 GB of activations per sample).
DEFAULT_MICRO_BATCH = {"eva02-clip-b16": 256, "eva02-clip-l14": 128}
WARMUP_STEPS = 5
# Which hardware profile a CUDA device name maps to (profiles/hardware/*.yaml).
DEVICE_PROFILES = (
    ("H200", "h200"),
    ("H100", "h100-sxm"),
    ("B200", "b200"),
    ("A100", "a100-80gb"),
    ("MI300X", "mi300x"),
    ("MI325X", "mi325x"),
)


# --------------------------------------------------------------------------- profiles without pydantic
@dataclass(frozen=True)
class _LiteVision:
    image_size: int
    patch_size: int
    width: int
    depth: int
    head_width: int
    mlp_ratio: float
    mlp: str
    norm: str
    qkv_bias: bool
    subln: bool
    rope: bool
    postnorm: bool
    xattn: bool
    drop_path_rate: float
    norm_eps: float = 1e-6

    @property
    def heads(self) -> int:
        return self.width // self.head_width

    @property
    def mlp_hidden(self) -> int:
        return int(self.width * self.mlp_ratio)


@dataclass(frozen=True)
class _LiteText:
    context_length: int
    vocab_size: int
    width: int
    heads: int
    layers: int
    mlp_ratio: float = 4.0
    xattn: bool = False
    norm_eps: float = 1e-5

    @property
    def mlp_hidden(self) -> int:
        return int(self.width * self.mlp_ratio)


@dataclass(frozen=True)
class _LiteModel:
    name: str
    embed_dim: int
    vision: _LiteVision
    text: _LiteText


def lite_model_spec(name: str) -> _LiteModel:
    """The architecture fields of a model profile, read with PyYAML alone."""
    import yaml

    raw = yaml.safe_load((REPO / "profiles" / "models" / f"{name}.yaml").read_text())
    v = {k: raw["vision"][k] for k in _LiteVision.__dataclass_fields__ if k in raw["vision"]}
    t = {k: raw["text"][k] for k in _LiteText.__dataclass_fields__ if k in raw["text"]}
    return _LiteModel(raw["name"], raw["embed_dim"], _LiteVision(**v), _LiteText(**t))


def load_model_spec(name: str) -> Any:
    """planner.profiles.load_model where pydantic is installed, else the same fields from the YAML."""
    try:
        from planner.profiles import load_model
    except ImportError:
        return lite_model_spec(name)
    return load_model(name)


def hardware_peak_tflops(profile: str) -> float:
    import yaml

    raw = yaml.safe_load((REPO / "profiles" / "hardware" / f"{profile}.yaml").read_text())
    return float(raw["bf16_dense_tflops"]["value"])


# --------------------------------------------------------------------------- planner predictions
def node_estimate(model_name: str, hardware: str, micro_batch: int, stack: str = "eager") -> Any:
    """The planner's estimate for one ZeRO-0 bf16 node of `hardware` at this micro-batch per GPU, no
    activation checkpointing: the layout of the runs measured here (benchmarks/op_census.py predicts
    the same way). The planner plans whole nodes; per-GPU figures do not depend on the node size at
    ZeRO-0."""
    from planner.estimate import estimate
    from planner.profiles import load_hardware, load_model
    from planner.spec import ParallelPlan, TrainingSpec

    # priced stepping what _adamw runs on every row, whatever the model's recipe steps
    model, hw = load_model(model_name).stepping("adamw"), load_hardware(hardware)
    plan = ParallelPlan(
        nodes=1,
        gpus_per_node=hw.gpus_per_node,
        zero_stage=0,
        micro_batch=micro_batch,
        grad_accum=1,
        grad_ckpt=False,
        precision="bf16",
    )
    training = TrainingSpec(
        samples=1e6,
        global_batch=plan.global_batch,
        image_size=model.recipe.image_size,
        patch_dropout=0.0,
        precision="bf16",
        stack=stack,
        # what _adamw runs on the plain-torch rows (fused=True); the other stacks step their own
        optimizer_impl="fused" if stack == "amp" else None,
    )
    return estimate(model, hw, plan, training)


def predict(model_name: str, hardware: str, micro_batch: int) -> dict[str, Any]:
    """The planner's view of one GPU of a ZeRO-0 node running this micro-batch (per-GPU figures)."""
    est = node_estimate(model_name, hardware, micro_batch)
    plan = est.plan
    return {
        "samples_per_s_per_gpu": est.compute.samples_per_s / plan.world_size,
        "mfu": est.compute.mfu,
        "peak_mem_bytes": est.memory.gpu_total_bytes,
        "model_flops_per_sample": est.compute.model_flops_per_sample,
        "note": f"planner estimate, {hardware}, ZeRO-0 bf16, micro-batch {micro_batch}, no grad ckpt",
    }


def all_predictions() -> dict[str, Any]:
    out: dict[str, Any] = {}
    for hw in ("h100-sxm", "h200"):
        for m in MODELS:
            out[f"{m}@{hw}"] = predict(m, hw, DEFAULT_MICRO_BATCH[m])
    return out


def load_predictions() -> tuple[dict[str, Any], str]:
    try:
        return all_predictions(), "planner (live)"
    except ImportError as e:
        if PREDICTIONS_FILE.exists():
            data = json.loads(PREDICTIONS_FILE.read_text())
            return data[
                "predictions"
            ], f"{PREDICTIONS_FILE.name} ({data['generated']}; planner not importable here: {e})"
        return {}, f"none (planner not importable: {e}; no {PREDICTIONS_FILE.name})"


# --------------------------------------------------------------------------- measured memory vs today's prediction
RESULT_LOGS = sorted((REPO / "benchmarks" / "results").glob("gpu_check-h100-*.log"))
# "eva02-clip-b16 [sdpa] mb 256: 923.2 samples/s, ..., peak 26.44 GiB, ..." (a row of main()'s output)
_LOG_ROW = re.compile(r"^(?P<model>\S+) \[(?P<attn>[^\]]+)\] mb (?P<mb>\d+): .*?, peak (?P<peak>[\d.]+) GiB")


def memory_ratios(
    logs: list[Path] | None = None, predictions: dict[str, Any] | None = None
) -> list[dict[str, Any]]:
    """Each uncompiled H100 run at the default micro-batch in benchmarks/results (the layout the
    predictions are for; a compiled run is another program): its allocator peak over the planner's
    predicted per-GPU total of today (the stored predictions, which a test keeps equal to the planner's)."""
    preds = (
        predictions if predictions is not None else json.loads(PREDICTIONS_FILE.read_text())["predictions"]
    )
    rows = []
    for log in logs if logs is not None else RESULT_LOGS:
        lines = log.read_text(encoding="utf-8").splitlines()
        trainer = (
            "DeepSpeed ZeRO-0" if any(x.startswith("trainer: DeepSpeed") for x in lines) else "plain torch"
        )
        for line in lines:
            m = _LOG_ROW.match(line)
            if m is None or "compile" in m["attn"] or int(m["mb"]) != DEFAULT_MICRO_BATCH.get(m["model"]):
                continue
            predicted = preds[f"{m['model']}@h100-sxm"]["peak_mem_bytes"] / 2**30
            measured = float(m["peak"])
            rows.append(
                {
                    "log": log.name,
                    "model": m["model"],
                    "trainer": trainer,
                    "measured_gib": measured,
                    "predicted_gib": predicted,
                    "ratio": measured / predicted,
                }
            )
    return rows


def memory_ratio_text(rows: list[dict[str, Any]]) -> str:
    """The table and the range line that README.md and docs/plan-and-compare.md quote."""
    out = [f"{'log':30} {'model':16} {'trainer':17} {'measured GiB':>12} {'predicted GiB':>13} {'ratio':>6}"]
    for r in rows:
        out.append(
            f"{r['log']:30} {r['model']:16} {r['trainer']:17} {r['measured_gib']:12.2f} "
            f"{r['predicted_gib']:13.2f} {r['ratio']:6.3f}"
        )
    for trainer in sorted({r["trainer"] for r in rows}):
        out.append(f"{trainer}: {_ratio_range([r for r in rows if r['trainer'] == trainer])}")
    out.append(f"memory peaks were {_ratio_range(rows)} the prediction")
    return "\n".join(out)


def _ratio_range(rows: list[dict[str, Any]]) -> str:
    return f"{min(r['ratio'] for r in rows):.2f}–{max(r['ratio'] for r in rows):.2f}×"


# --------------------------------------------------------------------------- measurement
def _deepspeed_available() -> bool:
    try:
        import deepspeed  # noqa: F401
    except Exception:
        return False
    return True


def _adamw(model: Any) -> Any:
    """The optimizer both steps below use, so the plain-torch and DeepSpeed rows differ only in
    DeepSpeed: fused AdamW with the bundled trainer's betas, eps and weight decay."""
    import torch

    return torch.optim.AdamW(
        model.parameters(), lr=1e-4, betas=(0.9, 0.98), eps=1e-6, weight_decay=0.05, fused=True
    )


def plain_torch_step(model: Any, images: Any, tokens: Any, autocast: bool) -> Callable[[], Any]:
    """One training step of the bundled trainer without DeepSpeed, as a closure over its optimizer:
    forward (under bf16 autocast when `autocast`: fp32 weights; else in the weights' own dtype), CLIP
    loss, backward, gradient clipping at 5, fused AdamW, the logit scale clamped; returns the loss.
    Shared by this script and benchmarks/gpu_breakdown.py, so both time the same step."""
    import torch

    from evaclip.logit_scale import clamp_logit_scale
    from evaclip.loss import clip_loss

    opt = _adamw(model)

    def step() -> Any:
        with torch.autocast(images.device.type, dtype=torch.bfloat16, enabled=autocast):
            img, txt, scale = model(images, tokens)
            loss = clip_loss(img, txt, scale)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        clamp_logit_scale(model.logit_scale)
        return loss

    return step


def deepspeed_step(model: Any, images: Any, tokens: Any, micro_batch: int) -> Callable[[], Any]:
    """One training step of the bundled trainer as `evaplan launch` runs it on one GPU: DeepSpeed
    ZeRO-0 bf16 with the config planner.deepspeed_config writes (gradient clipping at 5), fused AdamW
    as the client optimizer, the logit scale clamped; returns the loss. Shared by this script and
    benchmarks/gpu_breakdown.py."""
    import deepspeed

    from evaclip.logit_scale import clamp_logit_scale
    from evaclip.loss import clip_loss
    from evaclip.world import ensure_single_process_env
    from planner.deepspeed_config import deepspeed_config
    from planner.spec import ParallelPlan

    # A single process is its own rank 0 of 1 (DeepSpeed reads the torchrun variables).
    ensure_single_process_env()
    plan = ParallelPlan(
        nodes=1, gpus_per_node=1, zero_stage=0, micro_batch=micro_batch, grad_accum=1, grad_ckpt=False
    )
    opt = _adamw(model)
    engine, _, _, _ = deepspeed.initialize(
        model=model, optimizer=opt, config=deepspeed_config(plan, grad_clip=5.0)
    )

    def step() -> Any:
        img, txt, scale = engine(images, tokens)
        loss = clip_loss(img, txt, scale)
        engine.backward(loss)
        engine.step()
        clamp_logit_scale(engine.module.logit_scale, engine.optimizer)
        return loss

    return step


def run_one(
    spec: Any, micro_batch: int, steps: int, backend: str, use_deepspeed: bool, compile_model: bool = True
) -> dict[str, Any]:
    import torch

    from evaclip.flops import train_flops_per_sample
    from evaclip.model import build_model, last_attention_backend, set_attention_backend
    from evaclip.speed import compile_blocks, tower_attention_kernels

    set_attention_backend(backend)  # type: ignore[arg-type]
    torch.manual_seed(0)
    device = torch.device("cuda")
    image_size = spec.vision.image_size
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(device)
    images = torch.randn(micro_batch, 3, image_size, image_size, device=device, dtype=torch.bfloat16)
    tokens = torch.randint(1, 49406, (micro_batch, spec.text.context_length), device=device)
    tokens[:, -1] = 49407  # end-of-text, where the text tower pools
    model = build_model(spec)
    kernels = tower_attention_kernels(spec, image_size, micro_batch, torch.bfloat16, device)
    state = (
        compile_blocks(model, warn=lambda line: print(f"  warning: {line}", flush=True))
        if compile_model
        else None
    )
    if use_deepspeed:
        step = deepspeed_step(model, images, tokens, micro_batch)
    else:
        step = plain_torch_step(model.to(device), images, tokens, autocast=True)

    for _ in range(WARMUP_STEPS):
        step()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        loss = step()
    torch.cuda.synchronize()
    elapsed = time.perf_counter() - t0
    flops = train_flops_per_sample(spec, image_size, 0.0)
    samples_per_s = micro_batch * steps / elapsed
    result = {
        "samples_per_s": samples_per_s,
        "step_time_s": elapsed / steps,
        "tflops": flops * samples_per_s / 1e12,
        "peak_mem_bytes": torch.cuda.max_memory_allocated(device),
        "attention": last_attention_backend(),
        "kernels": kernels,
        "compile": state.describe() if state else "off",
        "loss": float(loss.detach().float()),
        "model_flops_per_sample": flops,
        "trainer": ("deepspeed ZeRO-0 bf16" if use_deepspeed else "torch AdamW(fused) + bf16 autocast")
        + (f", compile {state.describe()}" if state else ", eager"),
    }
    return result  # the model, optimizer and batch go with this frame; the caller empties the cache


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--micro-batch", type=int, default=None, help="default: per model (B/16 256, L/14 128)")
    p.add_argument("--hardware", default=None, help="hardware profile (default: from the CUDA device name)")
    p.add_argument("--no-deepspeed", action="store_true", help="plain torch even if deepspeed imports")
    p.add_argument(
        "--eager", action="store_true", help="also time every path without compilation (the trainer compiles)"
    )
    p.add_argument("--predict-only", action="store_true")
    p.add_argument(
        "--write-predictions", action="store_true", help=f"with --predict-only: write {PREDICTIONS_FILE.name}"
    )
    p.add_argument("--json-out", default=None, help="also write the results as JSON here")
    p.add_argument(
        "--memory-ratios",
        action="store_true",
        help="print measured peaks in benchmarks/results over the stored predictions (README's figure)",
    )
    args = p.parse_args(argv)

    if args.memory_ratios:
        print(memory_ratio_text(memory_ratios()))
        return 0

    if args.predict_only:
        preds = all_predictions()
        print(json.dumps(preds, indent=1))
        if args.write_predictions:
            # No timestamp: the file is the planner's output, byte for byte (tests/evaclip/test_gpu_check.py
            # recomputes it and fails on drift).
            payload = {"generated": GENERATED_BY, "predictions": preds}
            tmp = PREDICTIONS_FILE.with_suffix(".tmp")
            tmp.write_text(json.dumps(payload, indent=1) + "\n")
            tmp.replace(PREDICTIONS_FILE)
        return 0

    import torch

    if not torch.cuda.is_available():
        print(
            "error: no CUDA device (this check is for a GPU machine; --predict-only works anywhere)",
            file=sys.stderr,
        )
        return 2
    name = torch.cuda.get_device_name(0)
    hardware = args.hardware or next((prof for key, prof in DEVICE_PROFILES if key in name), "h100-sxm")
    peak = hardware_peak_tflops(hardware)
    use_ds = _deepspeed_available() and not args.no_deepspeed
    from evaclip.model import _flash_attn_func

    backends = (["flash"] if _flash_attn_func() is not None else []) + ["sdpa"]
    preds, pred_source = load_predictions()
    print(
        f"device: {name} → hardware profile {hardware} (bf16 dense peak {peak:.0f} TFLOP/s); torch {torch.__version__}"
    )
    print(
        f"trainer: {'DeepSpeed ZeRO-0 bf16' if use_ds else 'plain torch (deepspeed not importable): fused AdamW, bf16 autocast'}"
    )
    print(
        f"attention paths: {', '.join(backends)}{'' if 'flash' in backends else ' (flash_attn not importable)'}"
    )
    print(f"planner predictions: {pred_source}")
    rows: list[dict[str, Any]] = []
    t_all = time.time()
    for m in args.models.split(","):
        spec = load_model_spec(m)
        mb = args.micro_batch or DEFAULT_MICRO_BATCH.get(m, 64)
        variants = [(b, True) for b in backends] + ([(b, False) for b in backends] if args.eager else [])
        for backend, compiled in variants:
            label = backend + ("+compile" if compiled else "")
            try:
                r = run_one(spec, mb, args.steps, backend, use_ds, compiled)
            except Exception as e:  # report and go on: one failing path must not hide the others
                print(f"{m} [{label}] failed: {type(e).__name__}: {e}", flush=True)
                rows.append({"model": m, "attention": label, "error": f"{type(e).__name__}: {e}"})
                continue
            r.update(model=m, micro_batch=mb, requested=backend, mfu=r["tflops"] / peak)
            r["attention"] = f"{r['attention']}{'+compile' if r['compile'].startswith('regional') else ''}"
            pred = preds.get(f"{m}@{hardware}") if mb == DEFAULT_MICRO_BATCH.get(m) else None
            if pred:
                r["pred"] = pred
            rows.append(r)
            torch.cuda.empty_cache()
            print(
                f"{m} [{r['attention']}] mb {mb}: {r['samples_per_s']:.1f} samples/s, {r['tflops']:.1f} TFLOP/s, "
                f"MFU {r['mfu'] * 100:.1f}%, peak {r['peak_mem_bytes'] / 2**30:.2f} GiB, loss {r['loss']:.3f}, "
                f"{r['step_time_s'] * 1000:.1f} ms/step; kernels vision {r['kernels']['vision']}, "
                f"text {r['kernels']['text']}; compile {r['compile']}",
                flush=True,
            )
    print(
        f"\ntotal {time.time() - t_all:.0f} s; {args.steps} timed steps after {WARMUP_STEPS} warm-up steps each"
    )
    header = f"{'model':16} {'attn':13} {'mb':>4} {'samples/s':>10} {'pred':>9} {'MFU':>6} {'pred':>6} {'peak GiB':>9} {'pred':>7}"
    print(header)
    print("-" * len(header))
    for r in rows:
        if "error" in r:
            print(f"{r['model']:16} {r['attention']:13} failed: {r['error'][:60]}")
            continue
        pr = r.get("pred") or {}
        ps = f"{pr['samples_per_s_per_gpu']:9.1f}" if pr else f"{'n/a':>9}"
        pm = f"{pr['mfu'] * 100:5.1f}%" if pr else f"{'n/a':>6}"
        pg = f"{pr['peak_mem_bytes'] / 2**30:7.2f}" if pr else f"{'n/a':>7}"
        print(
            f"{r['model']:16} {r['attention']:13} {r['micro_batch']:>4} {r['samples_per_s']:10.1f} {ps} "
            f"{r['mfu'] * 100:5.1f}% {pm} {r['peak_mem_bytes'] / 2**30:9.2f} {pg}"
        )
    if args.json_out:
        Path(args.json_out).write_text(
            json.dumps({"device": name, "hardware": hardware, "rows": rows}, indent=1, default=str)
        )
    return 0 if rows and all("error" not in r for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
