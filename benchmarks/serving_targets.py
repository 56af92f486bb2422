"""Serving against its target: `evaplan serve`'s held-out median |error| on the bundled published
inference measurements (profiles/published_serving.yaml), beside the issue-21 target of 25 %.

    .venv/bin/python benchmarks/serving_targets.py [--compute-scale X] [--serving FILE]

Prints n, median |error|, worst |error| and median error for all measurements, the fit half and the
held-out half (planner/serving_validation.py; error = predicted / published images/s − 1), at:
- the hardware profiles as shipped (the raw per-operation model, scale 1);
- the one compute scale fitted on the fit halves of the training runs and the serving measurements
  together (profiles/validation_intervals.yaml): what `evaplan serve`, `estimate` and `plan` apply;
- the scale the serving fit half alone asks for (a diagnostic, not a product value);
- `--compute-scale X`, when given.
Then one line per setting says whether the held-out median |error| meets the target. A target, not a
test: the figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# Issue 21, "Targets": serving, held-out: median |error| ≤ 25 %.
HELD_OUT_MEDIAN_TARGET = 0.25


def main(argv: list[str] | None = None) -> int:
    from planner import serving_validation as sv
    from planner.errors import EvaplanError
    from planner.intervals import published_compute_scale
    from planner.report import format_rows

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--compute-scale", type=float, default=None, help="also check at this compute scale")
    ap.add_argument(
        "--serving", default=None, help="a published-serving YAML file (default: the bundled one)"
    )
    args = ap.parse_args(argv)
    if args.compute_scale is not None and not args.compute_scale > 0:
        print(f"--compute-scale must be positive, got {args.compute_scale}", file=sys.stderr)
        return 2
    try:
        settings: list[tuple[str, float | None]] = [
            ("hardware profiles as shipped, raw model (scale 1)", None)
        ]
        trained = published_compute_scale()
        if trained is not None:
            settings.append(
                (f"the one compute scale (training + serving fit halves; evaplan serve) {trained:g}", trained)
            )
        alone = sv.serving_only_scale(args.serving)
        settings.append((f"serving fit half alone: compute scale {alone:g} (diagnostic)", alone))
        if args.compute_scale is not None:
            settings.append((f"--compute-scale {args.compute_scale:g}", args.compute_scale))
        verdicts = []
        for label, scale in settings:
            summary = sv.serving_summary(sv.serving_checks(scale, args.serving))
            print(f"{label}:")
            print(format_rows(sv.summary_rows(summary), "table"))
            held = summary["held-out"].median_abs
            ok = held is not None and held <= HELD_OUT_MEDIAN_TARGET
            verdicts.append(
                f"{'meets' if ok else 'misses'} the target: held-out median |error| "
                f"{'-' if held is None else f'{held:.1%}'} vs ≤ {HELD_OUT_MEDIAN_TARGET:.0%} ({label})"
            )
    except EvaplanError as e:
        print(e.line(), file=sys.stderr)
        return e.exit_code
    print("\n".join(verdicts))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
