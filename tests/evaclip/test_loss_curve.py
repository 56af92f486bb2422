"""eva-clip-debug trains to the stored loss curve (tests/evaclip/assets/eva-clip-debug-loss-curve.json):
2 CPU ranks, fixed seed, 50 steps, every step's loss within the stored tolerance, so a change to
the numerics (model, init, loss, optimizer, data) is seen the day it lands. When such a change is
intended, regenerate the file with tests/evaclip/assets/make_loss_curve.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.train]

ASSETS = Path(__file__).with_name("assets")


def test_debug_model_follows_the_stored_loss_curve(tmp_path, trainer):
    from planner.profiles import load_model

    ref = json.loads((ASSETS / "eva-clip-debug-loss-curve.json").read_text())
    assert ref["nproc"] == 2  # the trainer fixture's world size
    # The stored run, not the generator's current constants: the file is the reference. The model
    # comes from today's profile, so a profile change shows here too.
    run_cfg = {
        **ref["run"],
        "model": load_model("eva-clip-debug").model_dump(mode="json"),
        "output_dir": str(tmp_path / "out"),
    }
    run = trainer.run_torchrun(tmp_path, ref["ds_config"], run_cfg)
    assert run.returncode == 0, run.log[-3000:]
    losses = [r["loss"] for r in run.steps()]
    assert len(losses) == len(ref["losses"]) == ref["run"]["total_steps"]
    off = [
        (step, got, want)
        for step, (got, want) in enumerate(zip(losses, ref["losses"], strict=True), start=1)
        if abs(got - want) > ref["atol"] + ref["rtol"] * abs(want)
    ]
    assert not off, (
        f"{len(off)} steps off the stored curve, first: step {off[0][0]} loss {off[0][1]:.6f} vs {off[0][2]:.6f}"
    )
    assert losses[-1] < 0.5 * losses[0]  # and it learns
