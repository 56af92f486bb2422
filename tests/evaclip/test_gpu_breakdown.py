"""benchmarks/gpu_breakdown.py is run on a lent GPU for a few minutes, once: its code path must work
before it gets there. `--smoke` runs every part on the CPU with the tiny model; no figure is
checked (a CPU says nothing about an H100), only that every row carries the planner's prediction
beside its measurement."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "benchmarks" / "gpu_breakdown.py"
# A guard against a hung run, not a speed target: the smoke run takes 10-15 s on the idle 2-core
# machine, several times that at load 4.
HUNG_S = 1200


def _smoke(out: Path, budget_s: str) -> dict:
    """Run `--smoke --json-out out` with a budget; it must succeed; its JSON."""
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--smoke", "--json-out", str(out), "--budget-s", budget_s],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=HUNG_S,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(out.read_text())


@pytest.fixture(scope="module")
def smoke(tmp_path_factory) -> dict:
    return _smoke(tmp_path_factory.mktemp("breakdown") / "breakdown.json", "600")


def test_smoke_writes_every_part_with_predictions(smoke):
    assert smoke["smoke"] is True and smoke["torch"] and smoke["date"] and smoke["device"]
    parts = smoke["parts"]
    # eva-clip-debug (and again as the amp probe), serving batches 1, 2
    expected_rows = {"train": 4, "serve": 4, "host": 4, "gemm": 9}
    assert {k: len(v) for k, v in parts.items()} == expected_rows
    for part, rows in parts.items():
        for row in rows:
            assert "error" not in row and "skipped" not in row, (part, row)
            assert row["measured"] and row["predicted"] and "ratio" in row, (part, row)


def test_smoke_rows_hold_the_figures_the_tables_compare(smoke):
    parts = smoke["parts"]
    assert [(r["stack"], r["micro_batch"]) for r in parts["train"]] == [
        ("amp", 2),
        ("amp", 1),  # the B/32 probe's row, with the tiny model
        ("eager", 2),
        ("compile", 2),
    ]
    for r in parts["train"]:
        for key in ("gemm_s", "attention_s", "memory_bound_s", "host_s", "step_s", "optimizer_s"):
            assert r["predicted"][key] >= 0, (r["label"], key)
        assert r["measured"]["wall_s"] > 0
        assert r["ratio"]["wall/step"] is not None
    assert {(r["stack"], r["batch"]) for r in parts["serve"]} == {
        (s, b) for s in ("eager", "compile") for b in (1, 2)
    }
    for r in parts["serve"]:
        assert r["predicted"]["tp"] == 1 and r["ratio"]["images_per_s"] > 0
    for r in parts["host"]:
        assert r["measured"]["host_s_per_call"] > 0 and r["ratio"]["per_kernel"] > 0
    for r in parts["gemm"]:
        assert r["predicted"]["tflops"] > 0 and r["ratio"]["tflops"] > 0


@pytest.mark.parametrize(
    ("name", "cls"),
    [
        ("sm90_xmma_gemm_bf16bf16_bf16f32_f32_tn_n_tilesize128x256x64_warpgroupsize2x1x1", "gemm"),
        ("nvjet_tst_256x128_64x4_1x2_h_bz_coopA_NTN", "gemm"),
        ("ampere_bf16_s16816gemm_bf16_128x128_ldg8_f2f_stages_32x5_tn", "gemm"),
        ("void pytorch_flash::flash_fwd_kernel<Flash_fwd_kernel_traits<64, 128>, true>", "attention"),
        ("void pytorch_flash::flash_bwd_dq_dk_dv_loop_seqk_parallel_kernel<...>", "attention"),
        ("fmha_cutlassF_bf16_aligned_64x64_rf_sm80", "attention"),  # CUTLASS, but attention
        ("cudnn_generated_fort_native_sdpa_sm90_flash_fprop_wgmma_f16_knob_3", "attention"),
        (
            "void at::native::multi_tensor_apply_kernel<at::native::FusedAdamMathFunctor<float, 4>>",
            "optimizer",
        ),
        ("void at::native::(anonymous namespace)::CatArrayBatchedCopy<...>", "copy"),
        ("Memcpy DtoD (Device -> Device)", "copy"),
        ("void at::native::vectorized_elementwise_kernel<4, at::native::GeluCUDAKernelImpl>", "elementwise"),
        ("triton_per_fused_native_layer_norm_0", "elementwise"),
    ],
)
def test_kernel_classes(benchmark_script, name, cls):
    assert benchmark_script("gpu_breakdown").classify_kernel(name) == cls


def test_class_totals_sum_by_class(benchmark_script):
    gb = benchmark_script("gpu_breakdown")
    totals = gb.class_totals([("nvjet_a", 1.0), ("nvjet_b", 2.0), ("flash_fwd", 0.5), ("add_kernel", 0.25)])
    assert totals["seconds"]["gemm"] == 3.0 and totals["counts"]["gemm"] == 2
    assert totals["seconds"]["attention"] == 0.5 and totals["seconds"]["elementwise"] == 0.25
    assert totals["seconds"]["copy"] == 0.0 and totals["counts"]["optimizer"] == 0


def test_the_b32_probe_is_an_amp_row_of_a_bundled_model(benchmark_script):
    """The probe names a model profile the planner and the trainer both build, at OpenCLIP's stack."""
    gb = benchmark_script("gpu_breakdown")
    assert set(gb.PROBES) <= set(gb.STACKS)
    for rows in gb.PROBES.values():
        for name, mb in rows:
            spec = gb.load_model_spec(name)
            assert spec.text.width == 512 and spec.vision.patch_size == 32 and mb > 0


def test_gemm_shapes_follow_the_planner_linears(benchmark_script):
    """B/16 at micro-batch 256: 197 tokens per image, q/k/v projected separately (sub-LN), SwiGLU."""
    gb = benchmark_script("gpu_breakdown")
    shapes = {
        label: (m, n, k, c) for label, m, n, k, c in gb.gemm_shapes(gb.load_model_spec("eva02-clip-b16"), 256)
    }
    assert shapes["vision q/k/v"] == (256 * 197, 768, 768, 36)
    assert shapes["vision mlp in"][3] == 24 and shapes["vision mlp out"][2] == shapes["vision mlp in"][1]
    assert shapes["text qkv"] == (256 * 77, 3 * 512, 512, 12)


def test_rows_past_the_budget_are_skipped_and_say_so(tmp_path):
    """On a lent GPU the budget cuts the run short rather than the tool's timeout: every row not
    started in time is in the JSON as skipped, and the run still succeeds."""
    rows = [r for part in _smoke(tmp_path / "b.json", "0")["parts"].values() for r in part]
    assert len(rows) == 21 and all("skipped" in r and "measured" not in r for r in rows)
