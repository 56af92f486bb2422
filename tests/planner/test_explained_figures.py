"""Every formula `evaplan estimate` prints, evaluated with the inputs it prints, gives the value it
prints (DESIGN rule 13): an explanation cannot drift from its number.

Figures whose formula is still prose (not yet a planner.terms.Term) are listed in PROSE; the test
also fails when one of them becomes evaluable, so the list only shrinks.
"""

from __future__ import annotations

import json

import pytest

from planner.terms import FUNCTIONS, evaluate

QUESTIONS = [
    ("--model", "eva-clip-18b", "--offering", "aws-p5", "--gpus", "256"),
    ("--model", "eva-clip-18b", "--offering", "aws-p5", "--gpus", "64", "--zero-stage", "3",
     "--offload-optimizer", "cpu", "--micro-batch", "8"),
    ("--model", "eva02-clip-b16", "--hardware", "h100-sxm", "--gpus", "8"),
    ("--model", "eva02-clip-l14", "--offering", "azure-nd-mi300x-v5", "--gpus", "16", "--zero-stage", "1",
     "--stack", "compile", "--attention", "math"),
]  # fmt: skip

# Figures still explained in words (to be moved onto Terms); a comm.<collective> figure is one per
# collective.
PROSE = {
    "params.vision",
    "params.text",
    "params.largest_layer",
    "memory.activations_vision_per_sample",
    "memory.activations_text_per_sample",
    "compute.forward_flops_vision",
    "compute.forward_flops_text",
    "compute.forward_flops_loss",
    "compute.model_flops_per_sample",
    "compute.hardware_flops_per_sample",
    "compute.gemm_per_microbatch",
    "compute.attention_per_microbatch",
    "compute.memory_bound_per_microbatch",
    "time.microbatch_overhead",
    "time.step_overhead",
    "time.offload_per_step",
}


def _evaluable(formula: str, inputs: dict[str, object]) -> bool:
    try:
        code = compile(formula, "<formula>", "eval")
    except SyntaxError:
        return False
    return all(n in inputs or n in FUNCTIONS for n in code.co_names)


def _is_prose(name: str) -> bool:
    return name in PROSE or (name.startswith("comm.") and name not in CHECKED_COMM)


CHECKED_COMM = {"comm.message_bytes_per_gpu", "comm.cluster_ring_bytes"}


@pytest.mark.parametrize("question", QUESTIONS, ids=lambda q: "-".join(q[1::2][:3]))
def test_every_printed_formula_gives_the_printed_value(cli, question: tuple[str, ...]) -> None:
    r = cli("estimate", *question, "--format", "json")
    assert r.exit_code == 0, r.output
    figures = json.loads(r.stdout)["derivation"]
    checked = 0
    for f in figures:
        name, formula, inputs = f["name"], f["formula"], f["inputs"]
        if _is_prose(name):
            assert not _evaluable(formula, inputs), f"{name} now evaluates: take it off PROSE"
            continue
        assert _evaluable(formula, inputs), f"{name}: `{formula}` does not evaluate with {sorted(inputs)}"
        value = float(evaluate(formula, inputs))
        assert value == pytest.approx(f["value"], rel=1e-12, abs=0.0), (name, formula, inputs)
        checked += 1
    assert checked >= 12
