"""Images per second of the real evaclip image encoder on this CPU, next to what `evaplan serve`
predicts for the `cpu` hardware profile (one "GPU" = one rank = one thread, as the profile measures).

    .venv/bin/python benchmarks/serve_cpu.py [--model eva-clip-debug] [--model eva02-clip-b16]
        [--batch 1 8 32] [--precision bf16] [--threads 1] [--repeat 3] [--device cpu] [--hardware cpu]

For each model and batch: the model in eval mode, the profile's dtype, no gradients, random weights
(the time does not depend on their values); one warm-up batch, then the median of `--repeat` timed
batches. Prints measured images/s, the planner's prediction (planner.serve: the same per-batch time
model `evaplan serve` uses, with the profile's calibration if one is saved) and their ratio. On a
GPU machine, `--device cuda --hardware h200` does the same against that profile.

Speed figures are printed, never asserted: the host is shared and noisy.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from planner.spec import HardwareSpec

DTYPES = {"bf16": "bfloat16", "fp32": "float32"}


def measure(model_name: str, batch: int, precision: str, repeat: int, device: str) -> float:
    """Median seconds per image batch of the real image tower."""
    import torch

    from evaclip.model import build_model
    from planner.profiles import load_model

    spec = load_model(model_name)
    dtype = getattr(torch, DTYPES[precision])
    with torch.device(device):
        model = build_model(spec).to(dtype).eval()
        size = spec.vision.image_size
        images = torch.randn(batch, 3, size, size, dtype=dtype)

    def once() -> None:
        with torch.inference_mode():
            model.visual(images)
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    once()  # warm-up: allocator, oneDNN/cuBLAS kernel selection
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        once()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def shipped_hardware(hardware: str) -> tuple[HardwareSpec, str]:
    """The hardware profile as `evaplan serve` sees it (with its saved calibration, if any)."""
    from planner import profiles as prof
    from planner.calibration import calibrated_hardware

    cal = calibrated_hardware(prof.load_hardware(hardware))
    used = cal.calibration.describe() if cal.calibration is not None else "profile as shipped"
    return cal.hardware, used


def remeasured_hardware(hw: HardwareSpec, repeat: int) -> tuple[HardwareSpec, str]:
    """The profile with its serving rates measured on this host now, the way benchmarks/measure_cpu.py
    measures them: the best bf16 F.linear rate over square sizes (the matmul rate, and the bf16 peak
    it stands in for on a CPU) and the copy bandwidth (the achieved "HBM" bandwidth). Attention keeps
    the profile's assumption, half the matmul rate; the shape model's other inputs stay."""
    from datetime import date

    from launcher.measure_cpu import copy_gbps, gemm_tflops
    from planner.spec import Sourced

    sizes = (256, 512, 1024)
    rates = gemm_tflops("bfloat16", sizes, repeat)
    n = max(rates, key=lambda k: rates[k])
    tflops = rates[n]
    gbps = copy_gbps(repeat)
    today = date.today()
    src = "benchmarks/serve_cpu.py on this host"

    def sourced(v: float) -> Sourced:
        return Sourced(value=v, source=src, observed=today)

    new = hw.model_copy(
        update={
            "bf16_dense_tflops": sourced(tflops),
            "hbm_tbps": sourced(gbps / 1e3),
            "hbm_achieved_tbps": sourced(gbps / 1e3),
            "matmul": hw.matmul.model_copy(
                update={"tflops": sourced(tflops), "m": int(n), "n": int(n), "k": int(n)}
            ),
            "attention": hw.attention.model_copy(update={"flash_fwd_tflops": sourced(tflops / 2)}),
        }
    )
    return new, f"bf16 GEMM {tflops:.4f} TFLOP/s (n={n}), copy {gbps:.2f} GB/s measured now"


def predict(model_name: str, hw: HardwareSpec, batch: int, precision: str) -> float:
    """Predicted images/s of one replica at TP 1."""
    from planner import profiles as prof
    from planner.serve import inference_batch_time_s

    t = inference_batch_time_s(prof.load_model(model_name), hw, "image", batch, precision, 1)
    return batch / t.total_s


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", action="append", default=None, help="model profile; repeatable")
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 8, 32])
    ap.add_argument("--precision", choices=["bf16"], default="bf16", help="the profile's GEMM rate is bf16")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (the cpu profile: 1 per rank)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--hardware", default="cpu", help="hardware profile to predict for")
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    models = args.model or ["eva-clip-debug"]
    shipped, used = shipped_hardware(args.hardware)
    here, how = (shipped, used) if args.device != "cpu" else remeasured_hardware(shipped, args.repeat)
    print(f"device {args.device}, {args.threads} thread(s), {args.precision}, median of {args.repeat}")
    print(f"A: '{args.hardware}' {used}")
    print(f"B: '{args.hardware}' with {how}")
    print(
        f"{'model':<16} {'batch':>5} {'measured img/s':>15} {'pred. A':>10} {'meas./A':>8} {'pred. B':>10} {'meas./B':>8}"
    )
    for name in models:
        for b in args.batch:
            rate = b / measure(name, b, args.precision, args.repeat, args.device)
            a, bb = predict(name, shipped, b, args.precision), predict(name, here, b, args.precision)
            print(
                f"{name:<16} {b:>5} {rate:>15.4g} {a:>10.4g} {rate / a:>8.2f} {bb:>10.4g} {rate / bb:>8.2f}",
                flush=True,
            )
    print("prediction: planner.serve.inference_batch_time_s (the time model of `evaplan serve`), TP 1")
    return 0


if __name__ == "__main__":
    sys.exit(main())
