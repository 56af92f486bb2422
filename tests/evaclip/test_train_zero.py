"""The trainer on 2 CPU ranks (torchrun + gloo): ZeRO 0–3 each train eva-clip-debug on the synthetic
set and the loss falls; the metrics file holds the documented keys; the comms logger's bytes per
optimizer step match planner.comm's prediction within 5%; SIGTERM mid-run checkpoints, a corrupt
newest checkpoint is skipped, and the resumed loss trajectory matches the uninterrupted run.

One run per ZeRO stage is shared by all assertions (the suite's time budget): ZeRO-0/1 with gradient
accumulation 1 (micro-batch 8), ZeRO-2/3 with 4 (micro-batch 4), so the comm check
covers both accumulation regimes; benchmarks/comm_check.py prints the full stage × accumulation grid.
"""

from __future__ import annotations

import os
import signal

import pytest

from evaclip.metrics import START_KEYS, STEP_KEYS

pytestmark = [pytest.mark.slow, pytest.mark.train]


GRAD_ACCUM = {0: 1, 1: 1, 2: 4, 3: 4}
# Cover the other trainer paths on the way: LAMB (its step is lr × ‖w‖, hence the larger lr) on
# ZeRO-0; activation checkpointing and patch dropout on ZeRO-1 (neither changes ZeRO-1's traffic).
STAGE_RUN_OVERRIDES = {
    0: {"optimizer": "lamb", "image_lr": 3e-3, "text_lr": 3e-3},
    1: {"grad_ckpt": True, "patch_dropout": 0.25},
}
_runs: dict[int, tuple] = {}


def _zero_run(stage: int, tmp_path_factory, trainer):
    """One 30-step run per ZeRO stage (comms logger on), made once and shared."""
    if stage not in _runs:
        work = tmp_path_factory.mktemp(f"zero{stage}")
        run_cfg = trainer.debug_run_config(work / "out", **STAGE_RUN_OVERRIDES.get(stage, {}))
        gas = GRAD_ACCUM[stage]
        # ZeRO-2/3: micro-batch 4 (8 contrastive pairs per micro-step: a learnable task), global 32.
        ds_cfg = trainer.ds_config_for(
            stage, micro_batch=8 if gas == 1 else 4, grad_accum=gas, comms_logger=True
        )
        _runs[stage] = (stage, ds_cfg, run_cfg, trainer.run_torchrun(work, ds_cfg, run_cfg))
    return _runs[stage]


@pytest.fixture(scope="module", params=[0, 1, 2, 3], ids=lambda z: f"zero{z}")
def zero_run(request, tmp_path_factory, trainer):
    return _zero_run(request.param, tmp_path_factory, trainer)


def test_trains_and_loss_falls(zero_run):
    stage, _, _, run = zero_run
    assert run.returncode == 0, run.log[-3000:]
    losses = [r["loss"] for r in run.steps()]
    assert len(losses) == 30
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    # Chance is ln(pairs per contrastive batch): 2.77 for 16, 2.08 for 8; the synthetic set is learnable.
    assert last < 0.85 * first, f"ZeRO-{stage}: loss {first:.3f} → {last:.3f} did not fall"


def test_metrics_contract(zero_run):
    stage, ds_cfg, _run_cfg, run = zero_run
    start = run.records[0]
    assert start["event"] == "start"
    assert set(START_KEYS) <= set(start)
    assert (start["job_name"], start["model"], start["world_size"], start["zero_stage"]) == (
        "evaclip-test",
        "eva-clip-debug",
        2,
        stage,
    )
    for rec in run.steps():
        assert set(STEP_KEYS) <= set(rec)
        assert rec["samples_seen"] == rec["step"] * ds_cfg["train_batch_size"]
        assert rec["samples_per_s"] > 0 and rec["tflops_per_gpu"] > 0 and rec["peak_mem_bytes"] > 0
        assert rec["mfu"] is None  # no hardware profile in the run config
        assert "comm_bytes" in rec
    assert run.records[-1] == {**run.records[-1], "event": "end", "status": "completed", "step": 30}
    assert any(r["event"] == "checkpoint" and r["reason"] == "final" for r in run.records)
    assert "step     30/30" in run.log  # the progress line a person reads


# DeepSpeed's comms logger name for each planner op.
_DS_NAMES = {
    "all_reduce": "all_reduce",
    "all_gather": "all_gather_into_tensor",
    "reduce_scatter": "reduce_scatter_tensor",
    "all_to_all": "all_to_all_single",
}
# Scalars DeepSpeed all-reduces for bookkeeping (gradient norm, overflow flags: 4–8 bytes per call)
# are not part of the planner's volume model; anything under this per step is ignored.
_BOOKKEEPING_BYTES = 1024


def _compare_comm(stage: int, ds_cfg, run_cfg, run) -> list[str]:
    from planner.comm import collective_bytes
    from planner.spec import ModelSpec, ParallelPlan

    zero = ds_cfg["zero_optimization"]
    plan = ParallelPlan(
        nodes=1,
        gpus_per_node=2,
        zero_stage=stage,
        micro_batch=ds_cfg["train_micro_batch_size_per_gpu"],
        grad_accum=ds_cfg["gradient_accumulation_steps"],
        grad_ckpt=False,
        overlap_comm=zero.get("overlap_comm", True),
    )
    predicted: dict[str, float] = {}
    for c in collective_bytes(ModelSpec.model_validate(run_cfg["model"]), plan):
        if c.ds_logged and float(c.logged_bytes) > 0:
            name = _DS_NAMES[c.op]
            predicted[name] = predicted.get(name, 0.0) + float(c.logged_bytes)
    # Steady state: ZeRO-3 traces the module order on step 1 and broadcasts once on step 2
    # (a few KB); the planner models the per-step volume from then on.
    steps = run.steps()[2:] if stage == 3 else run.steps()[1:]
    problems = []
    for rec in steps:
        measured = {k: v for k, v in rec["comm_bytes"].items() if v >= _BOOKKEEPING_BYTES}
        for name in sorted(set(measured) | set(predicted)):
            m, p = measured.get(name, 0), predicted.get(name, 0.0)
            if abs(m - p) > 0.05 * max(m, p):
                problems.append(f"step {rec['step']} {name}: measured {m} B, planner {p:.0f} B")
    return problems


def test_comm_bytes_match_planner(zero_run):
    stage, ds_cfg, run_cfg, run = zero_run
    assert run.returncode == 0, run.log[-3000:]
    problems = _compare_comm(stage, ds_cfg, run_cfg, run)
    assert not problems, "; ".join(problems[:6])


def test_sigterm_resume_matches_uninterrupted(tmp_path, tmp_path_factory, trainer):
    """Preempt a ZeRO-2 run (grad accum 4) with SIGTERM, corrupt its newest checkpoint, resume: the
    losses of both halves equal the uninterrupted ZeRO-2 run's, step by step."""
    _, ds_cfg, ref_cfg, ref = _zero_run(2, tmp_path_factory, trainer)
    assert ref.returncode == 0, ref.log[-3000:]
    total = ref_cfg["total_steps"]
    ds_cfg = {k: v for k, v in ds_cfg.items() if k != "comms_logger"}
    cfg = trainer.debug_run_config(tmp_path / "out", checkpoint={"every_steps": 4, "keep": 5})
    proc = trainer.start_torchrun(tmp_path, ds_cfg, cfg)
    trainer.wait_for_step(cfg, 9, proc)
    os.killpg(proc.pid, signal.SIGTERM)  # what the kubelet does on preemption (to the whole pod)
    first = trainer.finish(proc, tmp_path, cfg)
    assert first.returncode != 0, "a preempted run must not report success"
    end = [r for r in first.records if r["event"] == "end"]
    assert end and end[-1]["status"] == "preempted", first.log[-3000:]
    stopped_at = end[-1]["step"]
    assert 9 <= stopped_at < total
    saved = [r for r in first.records if r["event"] == "checkpoint"]
    assert saved[-1]["reason"] == "sigterm" and saved[-1]["step"] == stopped_at
    assert {r["step"] for r in saved if r["reason"] == "periodic"} >= {4, 8}

    # Corrupt the newest checkpoint without changing its size (bytes flipped in the middle of its
    # largest file, as a bad disk or copy would): only the manifest's sha256 can tell, and the
    # resume must fall back to the previous good one.
    newest = tmp_path / "out" / "checkpoints" / saved[-1]["tag"]
    victim = max(newest.rglob("*.pt"), key=lambda p: p.stat().st_size)
    data = bytearray(victim.read_bytes())
    mid = len(data) // 2
    data[mid : mid + 64] = bytes(b ^ 0xFF for b in data[mid : mid + 64])
    victim.write_bytes(bytes(data))
    previous = max(r["step"] for r in saved if r["step"] < stopped_at)

    second = trainer.run_torchrun(tmp_path, ds_cfg, cfg)
    assert second.returncode == 0, second.log[-3000:]
    assert (
        f"skipping checkpoint {saved[-1]['tag']}: {victim.relative_to(newest).as_posix()} does not match its sha256"
        in second.log
    )
    starts = [i for i, r in enumerate(second.records) if r["event"] == "start"]
    assert second.records[starts[-1]]["start_step"] == previous
    resumed = {r["step"]: r["loss"] for r in second.records[starts[-1] :] if r["event"] == "step"}
    assert sorted(resumed) == list(range(previous + 1, total + 1))
    reference = ref.losses()
    for step, loss in [*first.losses().items(), *resumed.items()]:
        assert loss == pytest.approx(reference[step], rel=1e-4, abs=1e-4), (
            f"step {step}: {loss} vs {reference[step]}"
        )
