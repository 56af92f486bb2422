"""Unit checks of the trainer's parts: tokenizer, data, optimizer groups and schedule, CLIP loss
(including the 2-rank all-gather with gradient against a single-process full batch), checkpoints."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")


def test_tokenizer_matches_openai_clip_ids():
    from evaclip.tokenizer import get_tokenizer

    tok = get_tokenizer()
    assert tok.vocab_size == 49408
    ids = tok(["a photo of a cat"], context_length=10)[0].tolist()
    # OpenAI CLIP: <start_of_text> a photo of a cat <end_of_text>, zero padded.
    assert ids == [49406, 320, 1125, 539, 320, 2368, 49407, 0, 0, 0]
    long = tok(["word " * 100], context_length=8)[0].tolist()
    assert long[0] == 49406 and long[-1] == 49407 and 0 not in long
    assert tok.decode(ids) == "a photo of a cat"


def test_synthetic_pairs_are_a_function_of_the_index():
    from evaclip.data import SyntheticPairs, synthetic_batches

    pairs = SyntheticPairs(image_size=16, context_length=16, classes=8, seed=3)
    a_img, a_tok = pairs.sample(41)
    b_img, b_tok = pairs.sample(41)
    assert torch.equal(a_img, b_img) and torch.equal(a_tok, b_tok)
    # Micro-step 5 of rank 1 is the same batch whether the stream starts at 0 or resumes at 5.
    full = synthetic_batches(pairs, micro_batch=2, rank=1, world_size=2, start_micro_step=0)
    for _ in range(5):
        next(full)
    resumed = synthetic_batches(pairs, micro_batch=2, rank=1, world_size=2, start_micro_step=5)
    x, y = next(full), next(resumed)
    assert torch.equal(x[0], y[0]) and torch.equal(x[1], y[1])


def _png(rgb, size=(48, 32)) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", size, rgb).save(buf, format="PNG")
    return buf.getvalue()


def test_local_shards_round_trip_and_skip(tmp_path):
    from evaclip.data import CLIP_MEAN, CLIP_STD, ShardStream, iter_shard_samples, list_shards
    from evaclip.tokenizer import get_tokenizer
    from tests.evaclip.shards import write_shards

    pairs = [(_png((10 * i, 0, 0)), f"caption number {i}") for i in range(10)]
    write_shards(pairs, tmp_path, samples_per_shard=4)
    shards = list_shards(str(tmp_path))
    assert [s.rsplit("/", 1)[1] for s in shards] == [
        "shard-000000.tar",
        "shard-000001.tar",
        "shard-000002.tar",
    ]
    assert [c for _, _, c in iter_shard_samples(shards[1])] == [f"caption number {i}" for i in range(4, 8)]
    stream = ShardStream(str(tmp_path), image_size=16, context_length=12, rank=0, world_size=1, seed=0)
    it = iter(stream)
    img, tokens = next(it)
    assert img.shape == (3, 16, 16) and tokens.shape == (12,)
    # A solid colour survives resize + crop + normalisation exactly.
    first_shard = stream._my_shards(0)[0]
    first_caption = next(iter_shard_samples(first_shard))[2]
    i = int(first_caption.split()[-1])
    expected_r = (10 * i / 255 - CLIP_MEAN[0]) / CLIP_STD[0]
    assert torch.allclose(img[0], torch.full((16, 16), expected_r), atol=1e-5)
    assert torch.equal(tokens, get_tokenizer()(first_caption, 12)[0])
    skipped = ShardStream(
        str(tmp_path), image_size=16, context_length=12, rank=0, world_size=1, seed=0, skip_samples=3
    )
    plain = iter(ShardStream(str(tmp_path), image_size=16, context_length=12, rank=0, world_size=1, seed=0))
    for _ in range(3):
        next(plain)
    assert torch.equal(next(iter(skipped))[1], next(plain)[1])


def test_shards_need_one_per_rank(tmp_path):
    from evaclip.data import ShardStream
    from planner.errors import EvaplanError
    from tests.evaclip.shards import write_shards

    write_shards([(_png((1, 2, 3)), "x")], tmp_path, samples_per_shard=4)
    with pytest.raises(EvaplanError, match=r"1 shards .* for 2 ranks"):
        ShardStream(str(tmp_path), image_size=16, context_length=8, rank=0, world_size=2, seed=0)


def _run_config(**kw):
    from evaclip.config import RunConfig
    from planner.profiles import load_model

    base = dict(
        job_name="t",
        model=load_model("eva-clip-debug"),
        total_steps=10,
        image_size=32,
        patch_dropout=0.0,
        image_lr=1e-3,
        text_lr=1e-4,
        image_layer_decay=0.5,
        text_layer_decay=0.25,
    )
    base.update(kw)
    return RunConfig(**base)


def test_layer_decay_groups():
    from evaclip.model import build_model
    from evaclip.optim import param_groups

    run = _run_config()
    model = build_model(run.model)
    groups = param_groups(model, run)
    names = [n for g in groups for n in g["names"]]
    assert sorted(names) == sorted(n for n, _ in model.named_parameters())  # each exactly once
    lr_of = {n: g["lr"] for g in groups for n in g["names"]}
    wd_of = {n: g["weight_decay"] for g in groups for n in g["names"]}
    depth, layers = run.model.vision.depth, run.model.text.layers  # 2 and 2
    assert lr_of["visual.head.weight"] == pytest.approx(1e-3)
    assert lr_of["visual.blocks.1.mlp.w1.weight"] == pytest.approx(1e-3 * 0.5)
    assert lr_of["visual.blocks.0.mlp.w1.weight"] == pytest.approx(1e-3 * 0.5**2)
    assert lr_of["visual.pos_embed"] == pytest.approx(1e-3 * 0.5 ** (depth + 1))
    assert lr_of["text.token_embedding.weight"] == pytest.approx(1e-4 * 0.25 ** (layers + 1))
    assert lr_of["text.text_projection"] == lr_of["logit_scale"] == pytest.approx(1e-4)
    assert wd_of["visual.blocks.0.attn.q_bias"] == wd_of["visual.pos_embed"] == wd_of["logit_scale"] == 0.0
    assert wd_of["visual.blocks.0.attn.q_proj.weight"] == run.weight_decay


def test_warmup_cosine():
    from evaclip.optim import lr_factor

    f = [lr_factor(s, warmup_steps=4, total_steps=14) for s in range(14)]
    assert f[:4] == [0.25, 0.5, 0.75, 1.0]
    assert (
        f[4] == 1.0
        and f[9] == pytest.approx(0.5)
        and f[13] == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.9)))
    )


def test_lamb_minimises_and_respects_trust_ratio():
    from evaclip.optim import Lamb

    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.randn(64))
    target = torch.randn(64)
    opt = Lamb([w], lr=0.05, betas=(0.9, 0.999), weight_decay=0.0)
    start = float(((w.detach() - target) ** 2).sum())
    for _ in range(100):
        opt.zero_grad()
        ((w - target) ** 2).sum().backward()
        before = w.detach().clone()
        opt.step()
        # The step size is lr × ‖w‖ (trust ratio × unit-norm direction scaled back by ‖update‖).
        assert float((w.detach() - before).norm()) == pytest.approx(0.05 * float(before.norm()), rel=1e-4)
    assert float(((w.detach() - target) ** 2).sum()) < 0.2 * start


def test_clip_loss_single_process():
    from evaclip.loss import clip_loss

    torch.manual_seed(0)
    img = torch.nn.functional.normalize(torch.randn(4, 8), dim=-1)
    txt = torch.nn.functional.normalize(torch.randn(4, 8), dim=-1)
    scale = torch.tensor([10.0])
    logits = 10.0 * img @ txt.T
    labels = torch.arange(4)
    expected = (
        torch.nn.functional.cross_entropy(logits, labels)
        + torch.nn.functional.cross_entropy(logits.T, labels)
    ) / 2
    assert float(clip_loss(img, txt, scale)) == pytest.approx(float(expected), rel=1e-6)
    assert float(clip_loss(img, txt, scale, local_loss=False)) == pytest.approx(float(expected), rel=1e-6)


_TWO_RANK_SCRIPT = """
import sys, torch, torch.distributed as dist
from evaclip.loss import clip_loss
dist.init_process_group("gloo")
rank = dist.get_rank()
torch.manual_seed(0)
img, txt = torch.randn(6, 8), torch.randn(6, 8)
mine = slice(3 * rank, 3 * rank + 3)
a = img[mine].clone().requires_grad_(True)
b = txt[mine].clone().requires_grad_(True)
loss = clip_loss(a, b, torch.tensor([5.0]), local_loss=True, gather_with_grad=True)
(loss / 2).backward()  # DeepSpeed averages gradients over ranks: the mean of the ranks' losses
g_img, g_txt = torch.zeros(6, 8), torch.zeros(6, 8)
g_img[mine], g_txt[mine] = a.grad, b.grad
dist.all_reduce(g_img); dist.all_reduce(g_txt)
total = loss.detach().clone(); dist.all_reduce(total)
if rank == 0:
    torch.save({"loss": total / 2, "g_img": g_img, "g_txt": g_txt}, sys.argv[1])
dist.destroy_process_group()
"""


def test_two_rank_gather_with_grad_equals_full_batch(tmp_path):
    import os
    import subprocess
    import sys

    from evaclip.loss import clip_loss

    script, out = tmp_path / "two_rank.py", tmp_path / "out.pt"
    script.write_text(_TWO_RANK_SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node=2",
            str(script),
            str(out),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,  # a backstop only: idle this takes ~10 s; load 8 makes it 5-10× slower
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    got = torch.load(out)
    torch.manual_seed(0)
    img = torch.randn(6, 8).requires_grad_(True)
    txt = torch.randn(6, 8).requires_grad_(True)
    # Local loss on rank r = its 3 rows of the full 6×6 logits (both directions): the mean over
    # ranks is the full-batch loss; so are the gradients (which cross ranks through the gather).
    full = clip_loss(img, txt, torch.tensor([5.0]), local_loss=False)
    full.backward()
    assert float(got["loss"]) == pytest.approx(float(full.detach()), rel=1e-5)
    assert torch.allclose(got["g_img"], img.grad, atol=1e-6)
    assert torch.allclose(got["g_txt"], txt.grad, atol=1e-6)


def test_checkpoint_verification(tmp_path):
    from evaclip.checkpoint import MANIFEST, Checkpointer

    ck = Checkpointer(tmp_path)
    good = tmp_path / "step00000004"
    good.mkdir()
    (good / "mp_rank_00_model_states.pt").write_bytes(b"x" * 10)
    # A manifest from before checksums (sizes only) still verifies by size.
    (good / MANIFEST).write_text(json.dumps({"step": 4, "files": {"mp_rank_00_model_states.pt": 10}}))
    half = tmp_path / "step00000008"
    half.mkdir()
    (half / "mp_rank_00_model_states.pt").write_bytes(b"x" * 10)  # no manifest: the save did not finish
    (tmp_path / "latest").write_text("step00000008")
    assert ck._candidates() == ["step00000008", "step00000004"]
    assert ck._verify("step00000004") is None
    assert "no manifest" in ck._verify("step00000008")
    (good / "mp_rank_00_model_states.pt").write_bytes(b"x" * 7)
    assert "has 7 bytes" in ck._verify("step00000004")


class _FileEngine:
    """Stands in for a DeepSpeed engine's checkpoint I/O: writes a model and a ZeRO shard file
    with the step in them, and loads a tag by reading it back."""

    def __init__(self) -> None:
        self.loaded: list[str] = []

    def save_checkpoint(self, save_dir, tag, client_state, save_latest):
        d = Path(save_dir) / tag
        d.mkdir(parents=True, exist_ok=True)
        step = client_state["step"]
        (d / "mp_rank_00_model_states.pt").write_bytes(bytes([step % 251]) * 4096)
        (d / "zero_pp_rank_0_mp_rank_00_optim_states.pt").write_bytes(bytes([(step * 7) % 251]) * 8192)

    def load_checkpoint(self, load_dir, tag, load_optimizer_states, load_lr_scheduler_states):
        self.loaded.append(tag)
        return str(Path(load_dir) / tag), {"step": int(tag.removeprefix("step"))}


def test_a_flipped_byte_of_the_right_size_falls_back_to_the_previous_checkpoint(tmp_path, capsys):
    from evaclip.checkpoint import MANIFEST, Checkpointer

    ck, engine = Checkpointer(tmp_path, keep=5), _FileEngine()
    for step in (4, 8):
        ck.save(engine, step, {"step": step})
    manifest = json.loads((tmp_path / "step00000008" / MANIFEST).read_text())
    entry = manifest["files"]["zero_pp_rank_0_mp_rank_00_optim_states.pt"]
    assert entry["bytes"] == 8192 and len(entry["sha256"]) == 64
    assert (tmp_path / "latest").read_text() == "step00000008"

    victim = tmp_path / "step00000008" / "zero_pp_rank_0_mp_rank_00_optim_states.pt"
    data = bytearray(victim.read_bytes())
    data[4000] ^= 0xFF  # same size, one byte changed
    victim.write_bytes(bytes(data))
    tag, state = ck.load_latest(engine)
    assert (tag, state["step"]) == ("step00000004", 4)
    assert engine.loaded == ["step00000004"]  # the corrupt one was never handed to DeepSpeed
    err = capsys.readouterr().err
    assert (
        "skipping checkpoint step00000008: zero_pp_rank_0_mp_rank_00_optim_states.pt does not match "
        "its sha256 in the manifest" in err
    )
    assert "trying the previous one" in err


def test_a_stale_latest_pointer_does_not_send_resume_back(tmp_path):
    from evaclip.checkpoint import LATEST, Checkpointer

    ck = Checkpointer(tmp_path, keep=5)
    for step in (4, 8):
        ck.save(_FileEngine(), step, {"step": step})
    (tmp_path / LATEST).write_text("step00000004")  # the pointer lags behind the newest checkpoint
    engine = _FileEngine()
    assert ck.load_latest(engine)[0] == "step00000008" and engine.loaded == ["step00000008"]


def test_a_failed_pointer_upload_does_not_send_resume_back(tmp_path, s3_env, monkeypatch):
    """Step 8's files and manifest reach S3 but its `latest` upload fails: a fresh pod (and the
    same pod) resume from step 8, the newest verified checkpoint, not from the pointer's step 4."""
    import boto3

    from evaclip import checkpoint, storage
    from evaclip.checkpoint import LATEST, Checkpointer
    from planner.errors import RuntimeFailure

    boto3.client("s3").create_bucket(Bucket="ckpt")
    uri = "s3://ckpt/runs/job1"
    pod1 = Checkpointer(tmp_path / "pod1", s3_uri=uri)
    pod1.save(_FileEngine(), 4, {"step": 4})
    real_put = storage.put_bytes

    def put_failing_on_latest(target, data: bytes) -> None:
        if target.key.endswith("/" + LATEST):
            raise RuntimeFailure(f"S3: cannot write {target}: connection reset", hint="retry")
        real_put(target, data)

    monkeypatch.setattr(checkpoint.storage, "put_bytes", put_failing_on_latest)
    with pytest.raises(RuntimeFailure):
        pod1.save(_FileEngine(), 8, {"step": 8})
    monkeypatch.setattr(checkpoint.storage, "put_bytes", real_put)
    assert storage.get_bytes(storage.parse_s3_uri(uri).child(LATEST)) == b"step00000004"

    for folder in ("pod2", "pod1"):  # a replacement pod (empty folder), then the same pod
        engine = _FileEngine()
        tag, state = Checkpointer(tmp_path / folder, s3_uri=uri).load_latest(engine)
        assert (tag, state["step"], engine.loaded) == ("step00000008", 8, ["step00000008"])


def test_s3_failures_are_one_line(monkeypatch):
    pytest.importorskip("boto3")
    import socket

    from evaclip.data import list_shards
    from planner.errors import RuntimeFailure

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for k, v in {
        "AWS_ENDPOINT_URL_S3": f"http://127.0.0.1:{port}",
        "AWS_ACCESS_KEY_ID": "x",
        "AWS_SECRET_ACCESS_KEY": "x",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_MAX_ATTEMPTS": "1",
    }.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(RuntimeFailure, match=r"^S3: cannot list s3://bucket/shards: .*AWS_ENDPOINT_URL_S3"):
        list_shards("s3://bucket/shards")
