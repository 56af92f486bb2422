"""The whole catalog in one search (issue 23): the physics once per hardware and only the rows that can
be shown kept, yet the answer equals the exhaustive per-offering search's, plan for plan."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from launcher.commands.compare import best_per_option
from launcher.commands.plan import result_json
from planner import profiles as prof
from planner.calibration import calibrated_hardware
from planner.errors import InfeasibleError
from planner.grid import SearchSpace, build_grid
from planner.report import to_jsonable
from planner.search import Constraints, SearchResult, Table, as_dict, option_columns, rank_table, search
from planner.spec import TrainingSpec
from planner.vectorized import evaluate_grid, make_option

DAY_S = 86400.0
# Node counts up to 48 keep the exhaustive reference small (16 offerings × ~13k candidates) while the
# choices still differ by question: MI300X for cost, B200 for time, and so on.
SPACE = SearchSpace(max_nodes=48)


def _options(names: list[str], pricing: str | None = None):
    out = []
    for name in names:
        if name in prof.index("offerings"):
            off = prof.load_offering(name)
            out.append(
                make_option(calibrated_hardware(prof.load_hardware(off.hardware)).hardware, off, pricing)
            )
        else:
            out.append(make_option(calibrated_hardware(prof.load_hardware(name)).hardware, None, None))
    return out


def per_offering_table(model, options, training, space, constraints) -> Table:
    """The search before issue 23: each option's grid evaluated on its own, candidate by candidate
    (a grid without its factors), every candidate of every option kept."""
    parts = []
    for i, opt in enumerate(options):
        grid = build_grid(
            space, opt.hardware.gpus_per_node, training.global_batch, constraints.batch_tolerance
        )
        flat = grid.take(slice(None))
        assert flat.factors is None
        parts.append(option_columns(flat, i, opt, evaluate_grid(model, opt, training, flat), constraints))
    return Table({k: np.concatenate([p[k] for p in parts]) for k in parts[0]})


def _shown(res: SearchResult) -> dict:
    """Everything `plan` prints of a result (the JSON document), what `compare` picks (each option's
    best, on its own GPU count and on common ones, exact or nearest), each option's Pareto frontier
    (the plot), and the chosen candidate less its row number (the searches number their tables
    differently)."""
    per_option = {gpus: best_per_option(res, gpus) for gpus in (None, 8, 64, 68, 100, 136, 1000)}
    return {
        "doc": to_jsonable(result_json(res)),
        "chosen": dataclasses.replace(res.chosen, index=0),
        "compare": {g: ([c and as_dict(c) for c in best], notes) for g, (best, notes) in per_option.items()},
        "frontiers": {k: [as_dict(c) for c in v] for k, v in res.frontier_by_option.items()},
    }


ALL = sorted(prof.index("offerings"))
QUESTIONS = [
    (
        "cheapest on one offering, 30-day deadline",
        ["aws-p5"],
        None,
        "cost",
        Constraints(0.02, deadline_s=30 * DAY_S, hbm_headroom=0.1),
    ),
    (
        "fastest on two offerings of one GPU",
        ["coreweave-h100", "lambda-h100"],
        None,
        "time",
        Constraints(0.02, hbm_headroom=0.1),
    ),
    (
        "cheapest, whole catalog, 30-day deadline",
        ALL,
        None,
        "cost",
        Constraints(0.02, deadline_s=30 * DAY_S, hbm_headroom=0.1),
    ),
    ("fastest, whole catalog", ALL, None, "time", Constraints(0.02, hbm_headroom=0.1)),
    (
        "least energy, whole catalog, 64 GPUs at most",
        ALL,
        None,
        "energy",
        Constraints(0.02, max_gpus=64, hbm_headroom=0.1),
    ),
    (
        "cheapest at spot prices within a budget and a deadline",
        ["aws-p5", "aws-p5en", "aws-p6-b200"],
        "spot",
        "cost",
        Constraints(0.02, deadline_s=40 * DAY_S, budget_usd=900e3, hbm_headroom=0.1),
    ),
    (
        "unpriced hardware and offerings of it, fewest GPU-hours",
        ["h100-sxm", "mi300x", "crusoe-mi300x", "lambda-h100"],
        None,
        "cost",
        Constraints(0.0, deadline_s=60 * DAY_S),
    ),
]


@pytest.mark.parametrize(
    ("what", "names", "pricing", "objective", "constraints"), QUESTIONS, ids=[q[0] for q in QUESTIONS]
)
def test_catalog_search_equals_the_exhaustive_search(what, names, pricing, objective, constraints) -> None:
    model = prof.load_model("eva-clip-18b")
    training = TrainingSpec.from_recipe(model.recipe)
    options = _options(names, pricing)
    table = per_offering_table(model, options, training, SPACE, constraints)
    want = rank_table(model, options, training, table, objective, constraints)
    got = search(model, options, training, objective=objective, space=SPACE, constraints=constraints)
    assert _shown(got) == _shown(want)
    assert got.candidates_evaluated == len(table)
    if len(options) > 1:  # rows that cannot be shown were dropped (the chosen option keeps its all)
        assert len(got.table) < len(table)


def test_the_same_error_when_nothing_fits() -> None:
    model = prof.load_model("eva-clip-18b")
    training = TrainingSpec.from_recipe(model.recipe)
    options = _options(["aws-p5", "tensorwave-mi300x", "aws-p6-b200"])
    for constraints in (
        Constraints(0.02, deadline_s=2 * DAY_S, budget_usd=100e3),
        Constraints(0.02, max_gpus=16, hbm_headroom=0.99),
    ):
        table = per_offering_table(model, options, training, SPACE, constraints)
        with pytest.raises(InfeasibleError) as want:
            rank_table(model, options, training, table, "cost", constraints)
        with pytest.raises(InfeasibleError) as got:
            search(model, options, training, space=SPACE, constraints=constraints)
        assert got.value.line() == want.value.line()


def test_progress_is_reported_per_option() -> None:
    model = prof.load_model("eva-clip-debug")
    seen: list[tuple[int, int]] = []
    search(
        model,
        _options(["aws-p5", "lambda-h100"]),
        TrainingSpec.from_recipe(model.recipe),
        space=SearchSpace(max_nodes=4),
        progress=lambda done, total: seen.append((done, total)),
    )
    assert seen == [(1, 2), (2, 2)]


def test_the_physics_runs_once_per_hardware(monkeypatch: pytest.MonkeyPatch) -> None:
    import planner.search as search_module

    calls: list[str] = []
    real = search_module.hardware_figures

    def counted(model, hardware, *args, **kw):
        calls.append(hardware.name)
        return real(model, hardware, *args, **kw)

    monkeypatch.setattr(search_module, "hardware_figures", counted)
    model = prof.load_model("eva-clip-debug")
    names = ["aws-p5", "lambda-h100", "coreweave-h100", "crusoe-mi300x", "tensorwave-mi300x"]
    search(model, _options(names), TrainingSpec.from_recipe(model.recipe), space=SearchSpace(max_nodes=4))
    assert sorted(calls) == ["h100-sxm", "mi300x"]
