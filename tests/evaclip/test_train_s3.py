"""S3 round trip against a moto server on 127.0.0.1: WebDataset shards read from s3://, checkpoints
uploaded with `latest` written last, and a fresh pod (empty local folder) resuming from S3."""

from __future__ import annotations

import io
import json

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.train]


def _png(rgb: tuple[int, int, int], size: int = 40) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (size, size), rgb).save(buf, format="PNG")
    return buf.getvalue()


def test_shards_and_checkpoints_round_trip(tmp_path, s3_env, trainer):
    import boto3

    from evaclip.data import iter_shard_samples, list_shards
    from tests.evaclip.shards import write_shards

    colours = {"red": (220, 20, 20), "green": (20, 200, 40), "blue": (30, 30, 220), "yellow": (230, 220, 20)}
    pairs = [(_png(rgb), f"a photo of something {name}") for i in range(16) for name, rgb in colours.items()]
    local = write_shards(pairs, tmp_path / "shards", samples_per_shard=16)
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="evaclip")
    for p in local:
        s3.upload_file(str(p), "evaclip", f"data/{p.name}")
    shards = list_shards("s3://evaclip/data")
    assert shards == [f"s3://evaclip/data/shard-{i:06d}.tar" for i in range(4)]
    first = list(iter_shard_samples(shards[0]))
    assert len(first) == 16 and first[0][2] == "a photo of something red" and first[0][1] == pairs[0][0]

    ds_cfg = trainer.ds_config_for(1)
    ckpt = {"every_steps": 3, "s3_uri": "s3://evaclip/runs/job1"}
    data = {"kind": "webdataset", "url": "s3://evaclip/data"}
    cfg = trainer.debug_run_config(tmp_path / "pod1" / "out", total_steps=6, checkpoint=ckpt, data=data)
    run = trainer.run_torchrun(tmp_path / "pod1", ds_cfg, cfg, env=s3_env)
    assert run.returncode == 0, run.log[-3000:]
    assert all(r["uploaded"] for r in run.records if r["event"] == "checkpoint")

    latest = s3.get_object(Bucket="evaclip", Key="runs/job1/latest")["Body"].read().decode()
    assert latest == "step00000006"
    manifest = json.loads(
        s3.get_object(Bucket="evaclip", Key="runs/job1/step00000006/evaclip-manifest.json")["Body"].read()
    )
    keys = {
        o["Key"] for o in s3.list_objects_v2(Bucket="evaclip", Prefix="runs/job1/step00000006/")["Contents"]
    }
    assert {f"runs/job1/step00000006/{rel}" for rel in manifest["files"]} <= keys
    assert any("zero_pp_rank_1" in rel for rel in manifest["files"])  # rank 1 uploaded its own shard
    # Each file's size and sha256, as the rank that wrote it hashed it: what a resume verifies.
    assert all(
        set(entry) == {"bytes", "sha256"} and len(entry["sha256"]) == 64
        for entry in manifest["files"].values()
    )

    # A replacement pod: nothing local, resume from S3 and go on.
    cfg2 = trainer.debug_run_config(tmp_path / "pod2" / "out", total_steps=8, checkpoint=ckpt, data=data)
    run2 = trainer.run_torchrun(tmp_path / "pod2", ds_cfg, cfg2, env=s3_env)
    assert run2.returncode == 0, run2.log[-3000:]
    start = run2.records[0]
    assert (start["start_step"], start["resumed_from"]) == (6, "step00000006")
    assert [r["step"] for r in run2.steps()] == [7, 8]
    latest = s3.get_object(Bucket="evaclip", Key="runs/job1/latest")["Body"].read().decode()
    assert latest == "step00000008"
