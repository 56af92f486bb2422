"""The time model's GPU-to-GPU ratios beside the published same-software ranges (issue 21 item 4).

For every entry of profiles/published_ratios.yaml: samples/s of the entry's `clip_layout` on the
numerator GPU over the same on the denominator GPU, each an uncalibrated `estimate` (the one compute
scale of profiles/validation_intervals.yaml, which cancels in the ratio except where host time, data
loading or communication do not scale), and whether it falls inside the published range.

    python benchmarks/gpu_ratio_targets.py
"""

from __future__ import annotations

import sys

from planner import profiles as prof
from planner.calibration import published_default
from planner.estimate import estimate
from planner.published_ratios import ClipLayout, PublishedRatio, load_ratios
from planner.spec import ParallelPlan, TrainingSpec


def samples_per_s(hardware: str, lay: ClipLayout) -> float:
    """Whole-job samples/s of the layout on `hardware` (a layout smaller than a node is one node of it)."""
    hw = published_default(prof.load_hardware(hardware))
    model = prof.load_model(lay.model)
    per_node = min(hw.gpus_per_node, lay.gpus)
    plan = ParallelPlan(
        nodes=max(1, lay.gpus // per_node),
        gpus_per_node=per_node,
        zero_stage=lay.zero_stage,
        micro_batch=lay.micro_batch,
        grad_accum=1,
        grad_ckpt=lay.grad_ckpt,
        precision=lay.precision,
    )
    batch = lay.micro_batch * lay.gpus
    training = TrainingSpec(
        samples=float(batch),
        global_batch=batch,
        image_size=model.recipe.image_size,
        patch_dropout=0.0,
        precision=lay.precision,
        stack=lay.stack,
        attention=lay.attention,
    )
    return batch / estimate(model, hw, plan, training).compute.step_s


def model_ratio(r: PublishedRatio) -> float:
    return samples_per_s(r.numerator, r.clip_layout) / samples_per_s(r.denominator, r.clip_layout)


def main() -> int:
    rows = []
    for r in load_ratios().ratios:
        q = model_ratio(r)
        inside = r.ratio_low <= q <= r.ratio_high
        rows.append(inside)
        print(
            f"{r.name:40s} {r.numerator}/{r.denominator}: published {r.ratio_low:.2f}–{r.ratio_high:.2f}, "
            f"model {q:.2f} ({'inside' if inside else 'outside'}; {r.clip_layout.model}, "
            f"{r.clip_layout.stack}, {r.clip_layout.attention})"
        )
    print(f"{sum(rows)} of {len(rows)} model ratios inside their published ranges (target: all)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
