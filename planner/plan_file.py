"""Read back what `estimate`, `plan` and `compare` wrote with `--format json`, as one Estimate to render.

- an estimate document is the Estimate itself;
- a plan document holds `chosen` and `ranked`: the chosen plan, or ranked plan N with `--pick N`;
- a compare document holds `options`: option N's best plan with `--pick N` (default: the baseline).

A plan row holds the layout and the figures; the Estimate is recomputed from the profiles (the same
functions the search used), and checked against the row's dollars and days so that a plan made with
other profiles is not rendered silently.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from planner.errors import EvaplanError

if TYPE_CHECKING:  # pydantic models load only when a document is read
    from planner.estimate import Estimate

HINT = "give the --format json output of `evaplan estimate`, `evaplan plan` or `evaplan compare`"


def load_document(path: str) -> dict[str, Any]:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise EvaplanError(
            f"cannot read --plan {path}: {getattr(e, 'strerror', None) or e}", hint=HINT
        ) from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise EvaplanError(f"--plan {path} is not JSON: {e.msg} at line {e.lineno}", hint=HINT) from None
    if not isinstance(doc, dict):
        raise EvaplanError(f"--plan {path} is not an evaplan result (a JSON object)", hint=HINT)
    return doc


def document_kind(doc: dict[str, Any]) -> str:
    if "chosen" in doc and "ranked" in doc:
        return "plan"
    if "options" in doc and "baseline" in doc:
        return "compare"
    return "estimate"


def pick_row(doc: dict[str, Any], pick: int | None, path: str) -> tuple[dict[str, Any], str]:
    """The plan row of a plan/compare document, and words saying which it is."""
    kind = document_kind(doc)
    if kind == "plan":
        ranked = doc.get("ranked") or []
        if pick is None:
            return doc["chosen"], "the chosen plan"
        if not 1 <= pick <= len(ranked):
            raise EvaplanError(
                f"--pick {pick}: {path} ranks {len(ranked)} plans", hint=f"use --pick 1 … {len(ranked)}"
            )
        return ranked[pick - 1], f"ranked plan {pick} of {len(ranked)}"
    options = doc.get("options") or []
    names = [o.get("option") for o in options]
    if pick is None:
        k = names.index(doc["baseline"]) if doc.get("baseline") in names else 0
        what = f"option {k + 1} of {len(options)} ({names[k]}, the baseline; --pick N for another)"
    else:
        if not 1 <= pick <= len(options):
            raise EvaplanError(
                f"--pick {pick}: {path} compares {len(options)} options",
                hint=f"use --pick 1 … {len(options)} ({', '.join(map(str, names))})",
            )
        k = pick - 1
        what = f"option {pick} of {len(options)} ({names[k]})"
    row = options[k].get("plan")
    if row is None:
        raise EvaplanError(f"{what} in {path} has no feasible plan", hint="pick another option")
    return row, what


def estimate_from_document(
    doc: dict[str, Any], pick: int | None, path: str, dirs: Sequence[str | Path] = ()
) -> tuple[Estimate, str]:
    """The Estimate to render from an estimate/plan/compare document, and which plan it is."""
    from pydantic import ValidationError

    from planner.estimate import Estimate

    kind = document_kind(doc)
    if kind == "estimate":
        if pick is not None:
            raise EvaplanError(f"--pick {pick}: {path} is an estimate (one plan)", hint="drop --pick")
        try:
            return Estimate.model_validate(doc), "the estimate"
        except ValidationError as e:
            first = e.errors()[0]
            loc = ".".join(str(x) for x in first.get("loc", ())) or "(top level)"
            raise EvaplanError(
                f"--plan {path} is not an evaplan result: {loc}: {first.get('msg')}", hint=HINT
            ) from None
    row, what = pick_row(doc, pick, path)
    est = estimate_for_row(doc, row, dirs, path)
    return est.model_copy(update={"chosen": [f"layout={what} of an `evaplan {kind}` result"]}), what


def estimate_for_row(
    doc: dict[str, Any], row: dict[str, Any], dirs: Sequence[str | Path], path: str
) -> Estimate:
    """Recompute the Estimate of one plan row (as `planner.search.as_dict` wrote it)."""
    from planner import profiles as prof
    from planner.calibration import calibrated_hardware
    from planner.choose import apply_headroom
    from planner.estimate import estimate
    from planner.headroom import HbmHeadroom
    from planner.spec import ParallelPlan, TrainingSpec

    try:
        training = TrainingSpec.model_validate({**doc["training"], "global_batch": row["global_batch"]})
        plan = ParallelPlan(
            nodes=row["nodes"],
            gpus_per_node=row["gpus"] // row["nodes"],
            zero_stage=row["zero_stage"],
            offload_optimizer=row["offload_optimizer"],
            offload_param=row["offload_param"],
            micro_batch=row["micro_batch"],
            grad_accum=row["grad_accum"],
            grad_ckpt=row["grad_ckpt"],
            hpz_partition_size=row["hpz_partition_size"],
            precision=training.precision,
        )
        model_name, hardware_name = doc["model"], row["hardware"]
        offering_name = row["option"] if row.get("pricing") else None
        c = doc.get("constraints") or {}
        headroom = HbmHeadroom(fraction=c.get("hbm_headroom", 0.0), gib=c.get("hbm_headroom_gib", 0.0))
    except (KeyError, TypeError, ValueError) as e:
        raise EvaplanError(f"--plan {path} is missing or has a bad field: {e}", hint=HINT) from None
    dirs = list(dirs)
    model = prof.load_model(model_name, dirs)
    hardware = calibrated_hardware(
        prof.load_hardware(hardware_name, dirs), dirs, use=not doc.get("no_calibration", False)
    ).hardware
    offering = prof.load_offering(offering_name, dirs) if offering_name else None
    est = apply_headroom(estimate(model, hardware, plan, training, offering), headroom)
    usd = row.get("cost_usd")
    if usd is not None and est.cost is not None:
        price = next((p.total_usd for p in est.cost.prices if p.pricing == row["pricing"]), None)
        if price is not None and abs(price - usd) > max(1.0, 0.005 * usd):
            raise EvaplanError(
                f"--plan {path} says ${usd:,.0f} but the current profiles give ${price:,.0f} for the same plan",
                hint="the profiles changed since it was written: re-run plan/compare",
            )
    return est
