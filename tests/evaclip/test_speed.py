"""evaclip.speed on CPU: regional compilation computes the same function as eager, a failing
compiler falls back to eager with one warning, the compile default follows device and ZeRO stage,
and the attention kernel report. (GPU throughput: benchmarks/gpu_check.py.)"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from planner.profiles import load_model  # noqa: E402


def _model_and_batch():
    from evaclip.model import build_model

    torch.manual_seed(0)
    spec = load_model("eva-clip-debug")
    model = build_model(spec).eval()
    images = torch.randn(2, 3, 32, 32)
    tokens = torch.randint(1, 49407, (2, spec.text.context_length))
    return model, images, tokens


def test_regional_compile_matches_eager():
    from evaclip.speed import compile_blocks

    model, images, tokens = _model_and_batch()
    with torch.no_grad():
        expected = model(images, tokens)
    # Dynamo traces each block; the "eager" backend runs the captured graph without code generation
    # (no C++ compiler needed on a CPU test machine).
    state = compile_blocks(model, backend="eager")
    with torch.no_grad():
        got = model(images, tokens)
    assert state.active and state.describe() == "regional (4 blocks)"
    for a, b in zip(got, expected, strict=True):
        assert torch.allclose(a, b, atol=1e-6)
    # Parameter names are untouched: checkpoints and the official export see the same model.
    assert all("_orig_mod" not in n for n in model.state_dict())


def test_failing_compiler_falls_back_to_eager_once():
    from evaclip.speed import compile_blocks

    def broken_backend(gm, example_inputs):
        raise RuntimeError("no compiler here")

    model, images, tokens = _model_and_batch()
    with torch.no_grad():
        expected = model(images, tokens)
    warnings: list[str] = []
    state = compile_blocks(model, backend=broken_backend, warn=warnings.append)
    with torch.no_grad():
        got = model(images, tokens)
        model(images, tokens)
    assert not state.active and "no compiler here" in (state.error or "")
    assert len(warnings) == 1 and warnings[0].startswith("torch.compile failed, running eager")
    assert state.describe().startswith("failed, eager")
    for a, b in zip(got, expected, strict=True):
        assert torch.allclose(a, b, atol=1e-6)


def test_compile_default():
    from evaclip.speed import should_compile

    cpu, gpu = torch.device("cpu"), torch.device("cuda", 0)
    assert should_compile("auto", gpu, 2) and not should_compile("auto", gpu, 3)
    assert not should_compile("auto", cpu, 0)
    assert should_compile("on", cpu, 3) and not should_compile("off", gpu, 0)


def test_attention_kernel_report_on_cpu():
    from evaclip.speed import tower_attention_kernels

    kernels = tower_attention_kernels(load_model("eva-clip-debug"), 32, 4, torch.float32, torch.device("cpu"))
    assert kernels == {"vision": "sdpa-cpu", "text": "sdpa-cpu"}


def test_fused_adamw_only_when_asked():
    from evaclip.config import RunConfig
    from evaclip.model import build_model
    from evaclip.optim import build_optimizer, param_groups

    spec = load_model("eva-clip-debug")
    run = RunConfig(
        job_name="j", model=spec, total_steps=1, image_size=32, patch_dropout=0.0, image_lr=1e-3, text_lr=1e-3
    )
    model = build_model(spec)
    groups = param_groups(model, run)
    assert not build_optimizer(groups, run).defaults.get("fused")
    assert build_optimizer(groups, run, fused=True).defaults["fused"] is True
