"""The trainer starts from released weights and exports back, end to end:

- 2 CPU ranks under ZeRO-3 (fp32) start from an official-layout checkpoint on S3 (moto on
  127.0.0.1) given with `--init-from`, at a new image size (position embedding resized); after one
  step at a negligible learning rate `python -m evaclip.export` writes the official layout, whose
  tensors equal the checkpoint's (resized where the grid changed);
- a checkpoint that does not match stops the run with its report and one `error:` line (exit 2);
  `--init-strict false` trains on.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.train]

torch = pytest.importorskip("torch")


def _official_file(path, *, seed: int = 5):
    from evaclip.model import build_model
    from evaclip.pretrained import official_state_dict
    from planner.profiles import load_model

    torch.manual_seed(seed)
    model = build_model(load_model("eva-clip-debug"))
    sd = official_state_dict(model, model.spec)
    torch.save({"state_dict": sd}, path)
    return sd


def _fp32(ds_cfg):
    return {k: v for k, v in ds_cfg.items() if k not in ("bf16", "fp16")}


def test_zero3_init_from_s3_then_export(tmp_path, s3_env, trainer):
    import boto3

    from evaclip.pretrained import resize_pos_embed

    source = _official_file(tmp_path / "eva.pt")
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="weights")
    s3.upload_file(str(tmp_path / "eva.pt"), "weights", "eva-clip-debug/eva.pt")

    work = tmp_path / "run"
    # Warm-up over 10,000 steps: the one step moves weights by ~lr = 3e-8.
    cfg = trainer.debug_run_config(work / "out", total_steps=1, image_size=48, warmup_steps=10_000)
    ds_cfg = _fp32(trainer.ds_config_for(3, micro_batch=4))
    run = trainer.run_torchrun(
        work, ds_cfg, cfg, env=s3_env, args=["--init-from", "s3://weights/eva-clip-debug/eva.pt"]
    )
    assert run.returncode == 0, run.log[-3000:]
    assert "init model from s3://weights/eva-clip-debug/eva.pt: 80 tensors loaded; 0 missing" in run.log
    assert "resized     visual.pos_embed: [1, 17, 64] -> [1, 37, 64]" in run.log
    assert run.records[0]["init_from"]["model"] == "s3://weights/eva-clip-debug/eva.pt"

    out = tmp_path / "export.pt"
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "evaclip.export",
            "--checkpoint-dir",
            str(work / "out" / "checkpoints"),
            "--run-config",
            str(work / "run.json"),
            "--out",
            str(out),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,  # a backstop only: idle ~15 s; load 8 makes it 5-10× slower
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    exported = torch.load(out, weights_only=True)
    expected = dict(source)
    expected["visual.pos_embed"] = resize_pos_embed(source["visual.pos_embed"], 6)
    rope = {k for k in exported if ".rope.freqs_" in k}
    assert exported.keys() - rope == expected.keys() - rope
    assert exported["logit_scale"].dim() == 0
    assert exported["visual.rope.freqs_cos"].shape == (36, 32)  # the 6 × 6 grid's tables
    for k in expected.keys() - rope:
        assert torch.allclose(exported[k], expected[k], atol=1e-5), k


def test_mismatch_stops_with_the_report_unless_not_strict(tmp_path, trainer):
    sd = _official_file(tmp_path / "eva.pt")
    del sd["visual.blocks.0.attn.q_bias"]
    torch.save(sd, tmp_path / "partial.pt")
    env = {
        **os.environ,
        "CUDA_VISIBLE_DEVICES": "",
        "OMP_NUM_THREADS": "1",
        "PYTHONWARNINGS": "ignore",
    }
    env.pop("RANK", None)
    results = {}
    for strict in ("true", "false"):
        work = tmp_path / strict
        work.mkdir()
        cfg = trainer.debug_run_config(work / "out", total_steps=1)
        # One process: the 2-rank config's global batch halved.
        ds_cfg = {**_fp32(trainer.ds_config_for(0, micro_batch=4)), "train_batch_size": 4}
        (work / "ds.json").write_text(json.dumps(ds_cfg))
        (work / "run.json").write_text(json.dumps(cfg))
        cmd = [sys.executable, "-m", "evaclip.train", "--ds-config", str(work / "ds.json")]
        cmd += ["--run-config", str(work / "run.json"), "--init-from", str(tmp_path / "partial.pt")]
        cmd += ["--init-strict", strict]
        # A backstop only: idle ~30 s each; load 8 makes it 5-10× slower.
        results[strict] = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1800)
    failed = results["true"]
    assert failed.returncode == 2, failed.stderr[-3000:]
    errors = [line for line in failed.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "1 missing, 0 unexpected, 0 reshaped" in errors[0]
    assert "--init-strict false" in errors[0] and "Traceback" not in failed.stderr
    assert "missing     visual.blocks.*.attn.q_bias" in failed.stdout
    ok = results["false"]
    assert ok.returncode == 0, ok.stderr[-3000:]
    assert "79 tensors loaded; 1 missing" in ok.stdout
