"""Op census of one training micro-batch of the bundled model, next to what planner/ops.py prices.

    python benchmarks/op_census.py --model eva02-clip-b16 --stack eager             # per-block table
    python benchmarks/op_census.py --model eva02-clip-b16 --stack amp --ops          # every ATen op
    python benchmarks/op_census.py --predict                                         # the H100 runs

For each tower it runs evaclip.op_census on the CPU (small real tensors: the per-block bytes scale
with micro-batch × tokens, so a micro-batch of 2 says what one of 256 does) and prints, per block, the
census's memory-bound bytes (elementwise + copy kinds) and ATen op count against the planner's
(planner.ops.block_totals). `--predict` prints the planner's samples/s for the measured H100 runs in
benchmarks/results/ (gpu_check.py: ZeRO-0, one GPU, micro-batch 256 for B/16 and 128 for L/14, no
checkpointing), with the per-micro-batch breakdown.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

# benchmarks/results/gpu_check-h100-*.log (2026-11-27): model, micro-batch, stack, samples/s measured.
MEASURED = (
    ("eva02-clip-b16", 256, "eager", 923.2, "gpu_check-h100-deepspeed.log"),
    ("eva02-clip-l14", 128, "eager", 225.7, "gpu_check-h100-deepspeed.log"),
    ("eva02-clip-b16", 256, "amp", 1176.7, "gpu_check-h100-torch.log"),
    ("eva02-clip-l14", 128, "amp", 262.5, "gpu_check-h100-torch.log"),
    ("eva02-clip-b16", 256, "compile", 2478.1, "gpu_check-h100-compile.log"),
)


def census_table(model_name: str, stack: str, micro_batch: int, grad_ckpt: bool, show_ops: bool) -> None:
    from evaclip.op_census import block_census
    from planner import ops
    from planner.profiles import load_model

    m = load_model(model_name)
    for tower in ("vision", "text"):
        t0 = time.perf_counter()
        tc = block_census(m, tower, micro_batch=micro_batch, stack=stack, grad_ckpt=grad_ckpt)
        if tower == "vision":
            seq = (m.vision.image_size // m.vision.patch_size) ** 2 + 1
        else:
            seq = m.text.context_length
        pb, pk = ops.block_totals(
            m, tower, micro_batch=micro_batch, seq=seq, stack=stack, precision="bf16", grad_ckpt=grad_ckpt
        )
        cb, ck = tc.block.bytes(("elementwise", "copy")), tc.block.count()
        print(
            f"{model_name} {tower} block, {stack}, micro-batch {micro_batch}{', checkpointing' if grad_ckpt else ''} "
            f"({time.perf_counter() - t0:.0f} s): memory-bound bytes census {cb:,} planner {pb:,.0f} "
            f"({pb / cb - 1:+.2%}); ATen ops census {ck} planner {pk:.0f}"
        )
        if show_ops:
            print(tc.block.table())
            print(f"outside the {tower} blocks:")
            print(tc.rest.table())


def predictions() -> None:
    from gpu_check import node_estimate  # benchmarks/gpu_check.py, beside this script

    print(
        f"{'model':16} {'stack':8} {'mb':>4} {'measured':>9} {'predicted':>10} {'error':>7}  "
        f"{'GEMM':>6} {'attn':>6} {'memory':>7} {'host':>6} {'step ms':>8} {'meas. ms':>8}"
    )
    for name, mb, stack, measured, _log in MEASURED:
        # Per-GPU figures of one ZeRO-0 node, as gpu_check.py predicts its runs: the gradient
        # all-reduce overlaps the backward.
        est = node_estimate(name, "h100-sxm", mb, stack)
        g = est.plan.gpus_per_node
        c = est.compute
        sps = c.samples_per_s / g
        print(
            f"{name:16} {stack:8} {mb:4d} {measured:9.1f} {sps:10.1f} {sps / measured - 1:+7.0%}  "
            f"{c.gemm_s * 1e3:6.1f} {c.attention_s * 1e3:6.1f} {c.memory_bound_s * 1e3:7.1f} {c.host_s * 1e3:6.1f} "
            f"{c.step_s * 1e3:8.1f} {mb / measured * 1e3:8.1f}"
        )
    print(
        "(per micro-batch, ms: GEMM, attention, memory-bound, host; h100-sxm profile, ZeRO-0, per GPU of one node)"
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="eva02-clip-b16")
    p.add_argument("--stack", default="eager", choices=("eager", "amp"))
    p.add_argument("--micro-batch", type=int, default=2)
    p.add_argument("--grad-ckpt", action="store_true")
    p.add_argument("--ops", action="store_true", help="print every ATen op of a block and outside the blocks")
    p.add_argument(
        "--predict", action="store_true", help="only the planner's figures for the measured H100 runs"
    )
    args = p.parse_args(argv)
    if args.predict:
        predictions()
        return 0
    census_table(args.model, args.stack, args.micro_batch, args.grad_ckpt, args.ops)
    return 0


if __name__ == "__main__":
    sys.exit(main())
