"""Every formula `evaplan estimate` prints, evaluated with the inputs it prints, gives the value it
prints (DESIGN rule 13): an explanation cannot drift from its number.

Every figure of the derivation is a planner.terms.Term: none is explained in words only.
"""

from __future__ import annotations

import json

import pytest

from planner import evaluate as ev
from planner import profiles as prof
from planner.estimate import Estimate, estimate
from planner.layout import Layout
from planner.spec import ParallelPlan, SourcedFraction, SourcedNonNegative, TrainingSpec
from planner.terms import FUNCTIONS, evaluate

QUESTIONS = [
    ("--model", "eva-clip-18b", "--offering", "aws-p5", "--gpus", "256"),
    ("--model", "eva-clip-18b", "--offering", "aws-p5", "--gpus", "64", "--zero-stage", "3",
     "--offload-optimizer", "cpu", "--micro-batch", "8"),
    ("--model", "eva02-clip-b16", "--hardware", "h100-sxm", "--gpus", "8"),
    ("--model", "eva02-clip-l14", "--offering", "azure-nd-mi300x-v5", "--gpus", "16", "--zero-stage", "1",
     "--stack", "compile", "--attention", "math"),
    # ZeRO-Infinity: optimizer and parameters on NVMe.
    ("--model", "eva-clip-18b", "--offering", "aws-p5", "--gpus", "64", "--zero-stage", "3",
     "--offload-optimizer", "nvme", "--offload-param", "nvme", "--micro-batch", "8"),
    # Parameters and optimizer offloaded to host RAM.
    ("--model", "eva-clip-8b", "--offering", "aws-p5", "--gpus", "64", "--zero-stage", "3",
     "--offload-param", "cpu", "--offload-optimizer", "cpu", "--micro-batch", "16"),
    # ZeRO-0 (DeepSpeed's unfused wrapper step) without checkpointing.
    ("--model", "eva02-clip-b16", "--hardware", "h100-sxm", "--gpus", "8", "--zero-stage", "0",
     "--no-grad-ckpt", "--micro-batch", "64"),
    # ZeRO-2 with checkpointing, patch dropout and fp16.
    ("--model", "eva02-clip-l14", "--hardware", "h100-sxm", "--gpus", "16", "--zero-stage", "2",
     "--grad-ckpt", "--patch-dropout", "0.5", "--precision", "fp16"),
    # fp32 weights and wire (autocast; `estimate` refuses fp32 training itself) with the math kernel.
    ("--model", "openclip-vit-b16", "--hardware", "a100-80gb", "--gpus", "8", "--zero-stage", "1",
     "--stack", "amp", "--attention", "math"),
    # ZeRO++ (hpZ, qwZ, qgZ) on a fused stack with the memory-efficient kernel.
    ("--model", "eva01-clip-g14", "--hardware", "mi300x", "--gpus", "16", "--zero-stage", "3", "--hpz", "8",
     "--quantized-weights", "--quantized-gradients", "--attention", "mem_efficient", "--stack", "fused"),
    ("--model", "eva-clip-debug", "--hardware", "cpu", "--gpus", "2", "--zero-stage", "2"),
]  # fmt: skip


def _check_every_figure(figures: list[dict]) -> int:
    for f in figures:
        name, formula, inputs = f["name"], f["formula"], f["inputs"]
        code = compile(formula, f"<{name}>", "eval")
        missing = [n for n in code.co_names if n not in inputs and n not in FUNCTIONS]
        assert not missing, f"{name}: `{formula}` does not evaluate: no input {missing}"
        value = float(evaluate(formula, inputs))
        assert value == pytest.approx(f["value"], rel=1e-12, abs=0.0), (name, formula, inputs)
    return len(figures)


@pytest.mark.parametrize("question", QUESTIONS, ids=lambda q: "-".join(q[1::2][:4]))
def test_every_printed_formula_gives_the_printed_value(cli, question: tuple[str, ...]) -> None:
    r = cli("estimate", *question, "--format", "json")
    assert r.exit_code == 0, r.output
    figures = json.loads(r.stdout)["derivation"]
    assert _check_every_figure(figures) >= 40
    comm = [f["name"] for f in figures if f["name"].startswith("comm.")]
    assert "comm.CLIP feature all-gather" in comm and len(comm) >= 5, comm


def _estimate_on(hardware_update: dict) -> Estimate:
    model, hw = prof.load_model("eva02-clip-b16"), prof.load_hardware("h100-sxm")
    plan = ParallelPlan(nodes=1, gpus_per_node=8, zero_stage=1, micro_batch=32, grad_accum=2, grad_ckpt=False)
    training = TrainingSpec(samples=1e6, global_batch=512, image_size=224, patch_dropout=0.0)
    return estimate(model, hw.model_copy(update=hardware_update), plan, training)


@pytest.mark.parametrize(
    "update",
    [
        {
            "microbatch_overhead_s": SourcedNonNegative(value=0.004, source="test", observed="2026-12-07"),
            "step_overhead_s": SourcedNonNegative(value=0.03, source="test", observed="2026-12-07"),
        },
        {"mfu_default": SourcedFraction(value=0.4, source="test", observed="2026-12-07")},
    ],
    ids=["calibrated-overheads", "flat-mfu"],
)
def test_calibrated_and_overridden_figures_explain_themselves(update: dict) -> None:
    """The fixed times a calibration fits and a profile's flat MFU print formulas that evaluate too."""
    e = _estimate_on(update)
    figures = json.loads(e.model_dump_json())["derivation"]
    _check_every_figure(figures)
    if "step_overhead_s" in update:
        assert e.figure("time.step_overhead").formula == "calibrated_s"
        assert e.figure("time.step_overhead").value == 0.03
        assert e.figure("time.microbatch_overhead").value == 0.004


def test_fp32_step_terms_explain_themselves() -> None:
    """`estimate` refuses fp32 training, but the search's step terms take it: each term, its inputs
    printed as numbers, evaluates to its value (and the ZeRO-0 wrapper of 16-bit engines is off)."""
    model, hw = prof.load_model("eva02-clip-b16"), prof.load_hardware("h100-sxm")
    layout = Layout(
        nodes=1,
        zero_stage=0,
        micro_batch=16,
        grad_ckpt=True,
        image_size=224,
        patch_dropout=0.5,
        precision="fp32",
    )
    terms = ev.step_terms(model, hw, layout)["terms"]
    assert set(terms) >= {"gemm", "attention", "memory_bound", "step_overhead", "offload"}
    for name, t in terms.items():
        printed = {k: float(v) for k, v in t.inputs.items()}
        assert float(evaluate(t.formula, printed)) == pytest.approx(float(t.value), rel=1e-12), name
    assert float(terms["step_overhead"].inputs["deepspeed_wrapper"]) == 0.0
