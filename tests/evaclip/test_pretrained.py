"""evaclip.pretrained in one process: checkpoints written in the official EVA-CLIP layout (and the
OpenCLIP text layout, and an EVA MIM vision layout) load into the model, strictly or with a report;
position embeddings follow a new grid; export writes the official layout back, byte-equal tensors.

The official layout is checked against the names planner.params derives from the official code
(not against evaclip's module), plus the official code's extra entries: RoPE tables in
`visual.rope` and every block, a 0-d logit_scale."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from planner.errors import EvaplanError  # noqa: E402
from planner.profiles import load_model  # noqa: E402


def _model(seed: int, image_size: int | None = None):
    from evaclip.model import build_model

    torch.manual_seed(seed)
    return build_model(load_model("eva-clip-debug"), image_size=image_size)


def _official_checkpoint(tmp_path, model, *, wrap: str | None = "state_dict", ddp_prefix: bool = False):
    """Write `model` as the official code saves it; returns (path, official state dict)."""
    from evaclip.pretrained import official_state_dict

    sd = official_state_dict(model, model.spec, model.visual.image_size)
    saved = {f"module.{k}": v for k, v in sd.items()} if ddp_prefix else sd
    path = tmp_path / "official.pt"
    torch.save({wrap: saved, "epoch": 3} if wrap else saved, path)
    return path, sd


def _same(a, b) -> bool:
    return all(torch.equal(pa, pb) for pa, pb in zip(a.parameters(), b.parameters(), strict=True))


def test_export_is_the_official_layout():
    from planner.params import param_tensors

    spec = load_model("eva-clip-debug")
    model = _model(0)
    from evaclip.pretrained import official_state_dict

    sd = official_state_dict(model, spec)
    planned = {t.name: t.shape for t in param_tensors(spec)}
    rope = {k for k in sd if ".rope.freqs_" in k}
    # One table pair at visual.rope and one per block (the blocks share the official module).
    assert rope == {
        f"{p}.freqs_{f}"
        for p in ["visual.rope"] + [f"visual.blocks.{i}.attn.rope" for i in range(spec.vision.depth)]
        for f in ("cos", "sin")
    }
    assert {k: tuple(v.shape) for k, v in sd.items() if k not in rope} == planned
    assert sd["logit_scale"].dim() == 0
    grid = spec.vision.image_size // spec.vision.patch_size
    assert sd["visual.rope.freqs_cos"].shape == (grid * grid, spec.vision.head_width)


@pytest.mark.parametrize(("wrap", "ddp_prefix"), [(None, False), ("state_dict", True), ("model", False)])
def test_official_checkpoint_round_trips(tmp_path, wrap, ddp_prefix):
    from evaclip.pretrained import load_pretrained, official_state_dict

    source = _model(0)
    path, written = _official_checkpoint(tmp_path, source, wrap=wrap, ddp_prefix=ddp_prefix)
    target = _model(1)
    assert not _same(source, target)
    lines: list[str] = []
    (report,) = load_pretrained(target, target.spec, model_uri=str(path), log=lines.append)
    assert report.clean and report.rope_tables == 2 * (1 + target.spec.vision.depth)
    assert _same(source, target)
    again = official_state_dict(target, target.spec)
    assert again.keys() == written.keys()
    assert all(torch.equal(again[k], written[k]) for k in written)
    assert "0 missing, 0 unexpected, 0 reshaped" in lines[0]


def test_strict_load_reports_then_fails_and_partial_load_proceeds(tmp_path):
    from evaclip.pretrained import load_pretrained

    source = _model(0)
    _, sd = _official_checkpoint(tmp_path, source)
    del sd["visual.blocks.0.attn.q_bias"], sd["visual.blocks.1.attn.q_bias"]
    sd["visual.head.weight"] = torch.zeros(7, 64)
    sd["visual.lm_head.weight"] = torch.zeros(3, 3)
    path = tmp_path / "broken.pt"
    torch.save(sd, path)
    target = _model(1)
    lines: list[str] = []
    with pytest.raises(EvaplanError) as err:
        load_pretrained(target, target.spec, model_uri=str(path), log=lines.append)
    assert "2 missing, 1 unexpected, 1 reshaped" in err.value.message
    assert "--init-strict false" in err.value.line()
    report = "\n".join(lines)
    assert "missing     visual.blocks.*.attn.q_bias (x2)" in report
    assert "unexpected  visual.lm_head.weight" in report
    assert "reshaped    visual.head.weight: checkpoint [7, 64] vs model [32, 64]" in report
    target = _model(1)
    before = target.visual.head.weight.detach().clone()
    (rep,) = load_pretrained(target, target.spec, model_uri=str(path), strict=False, log=lines.append)
    assert torch.equal(target.visual.head.weight, before)  # the reshaped tensor kept its init
    assert torch.equal(
        target.visual.blocks[2 % target.spec.vision.depth].mlp.w1.weight,
        source.visual.blocks[2 % target.spec.vision.depth].mlp.w1.weight,
    )
    assert len(rep.loaded) == len(list(target.parameters())) - 3


def test_vision_from_mim_weights_and_text_from_openclip(tmp_path):
    from evaclip.pretrained import load_pretrained

    source = _model(0)
    _, sd = _official_checkpoint(tmp_path, source)
    # EVA MIM: the vision tower's names without `visual.`, plus pre-training-only tensors.
    mim = {k[len("visual.") :]: v for k, v in sd.items() if k.startswith("visual.")}
    mim["mask_token"] = torch.zeros(1, 1, 64)
    torch.save({"model": mim}, tmp_path / "mim.pt")
    # OpenCLIP: the text tower at the top level, another model's image tower beside it.
    openclip = {k[len("text.") :]: v for k, v in sd.items() if k.startswith("text.")}
    openclip["visual.conv1.weight"] = torch.zeros(8, 3, 4, 4)
    openclip["logit_scale"] = sd["logit_scale"]
    torch.save(openclip, tmp_path / "openclip.pt")

    target = _model(1)
    text_before = [p.detach().clone() for p in target.text.parameters()]
    with pytest.raises(EvaplanError, match="1 unexpected"):
        load_pretrained(target, target.spec, vision_uri=str(tmp_path / "mim.pt"), log=lambda line: None)
    reports = load_pretrained(
        target,
        target.spec,
        vision_uri=str(tmp_path / "mim.pt"),
        text_uri=str(tmp_path / "openclip.pt"),
        strict=False,
        log=lambda line: None,
    )
    assert [r.unexpected for r in reports] == [["visual.mask_token"], []]
    assert all(
        torch.equal(a, b) for a, b in zip(source.visual.parameters(), target.visual.parameters(), strict=True)
    )
    assert all(
        torch.equal(a, b) for a, b in zip(source.text.parameters(), target.text.parameters(), strict=True)
    )
    assert not torch.equal(text_before[0], target.text.token_embedding.weight)
    # The text part reads only the text tower: logit_scale and the image tower are not its business.
    assert reports[1].clean


def test_position_embedding_follows_a_new_grid(tmp_path):
    from evaclip.pretrained import load_pretrained

    source = _model(0)  # 32 px, patch 8: 4 × 4 grid
    path, sd = _official_checkpoint(tmp_path, source)
    target = _model(1, image_size=48)  # 6 × 6 grid
    lines: list[str] = []
    (report,) = load_pretrained(target, target.spec, model_uri=str(path), log=lines.append)
    assert report.clean and report.resized == [("visual.pos_embed", (1, 17, 64), (1, 37, 64))]
    pos = target.visual.pos_embed.detach()
    assert torch.equal(pos[:, 0], sd["visual.pos_embed"][:, 0])  # CLS position kept
    grid = sd["visual.pos_embed"][:, 1:].reshape(1, 4, 4, 64).permute(0, 3, 1, 2)
    expected = torch.nn.functional.interpolate(grid, size=(6, 6), mode="bicubic", align_corners=False)
    assert torch.allclose(pos[:, 1:], expected.permute(0, 2, 3, 1).reshape(1, 36, 64))
    assert "  resized     visual.pos_embed: [1, 17, 64] -> [1, 37, 64]" in lines
    # The checkpoint's RoPE tables are for its own 4 × 4 grid; the model derives its 6 × 6 ones.
    x = torch.randn(2, 3, 48, 48)
    assert torch.isfinite(target.visual(x)).all()


def test_bad_files_are_one_line(tmp_path):
    from evaclip.pretrained import load_pretrained

    model = _model(0)
    (tmp_path / "junk.pt").write_text("not a checkpoint")
    for uri, message in [
        (str(tmp_path / "nope.pt"), "does not exist"),
        (str(tmp_path / "junk.pt"), "cannot be read"),
        ("s3://", "names no bucket"),
    ]:
        with pytest.raises(EvaplanError, match=message) as err:
            load_pretrained(model, model.spec, model_uri=uri, log=lambda line: None)
        assert "\n" not in err.value.line()
    # RoPE tables that are not this architecture's (e.g. another theta) are refused.
    path, sd = _official_checkpoint(tmp_path, model)
    sd["visual.rope.freqs_cos"] = sd["visual.rope.freqs_cos"] * 0.5
    torch.save(sd, path)
    with pytest.raises(EvaplanError, match="differs from the RoPE table"):
        load_pretrained(model, model.spec, model_uri=str(path), log=lambda line: None)


def test_run_config_and_flags():
    import argparse

    from evaclip.config import InitFrom
    from evaclip.train import apply_overrides

    with pytest.raises(ValueError, match=r"drop init_from\.vision"):
        InitFrom(model="a.pt", vision="b.pt")
    from evaclip.config import RunConfig

    spec = load_model("eva-clip-debug")
    run = RunConfig(
        job_name="j",
        model=spec,
        total_steps=1,
        image_size=32,
        patch_dropout=0.0,
        image_lr=1.0,
        text_lr=1.0,
        init_from=InitFrom(model="m.pt"),
    )
    args = argparse.Namespace(
        init_from=None, init_vision_from="v.pt", init_text_from=None, init_strict="false", compile="off"
    )
    new = apply_overrides(run, args)
    assert new.init_from == InitFrom(vision="v.pt", strict=False) and new.compile == "off"
    args.init_from = "m.pt"
    with pytest.raises(EvaplanError, match="--init-from loads both towers"):
        apply_overrides(run, args)


def test_legacy_torch_save_format_loads(tmp_path):
    """Older checkpoints use torch's pre-1.6 format, which cannot be memory-mapped."""
    from evaclip.pretrained import load_pretrained, official_state_dict

    source = _model(0)
    path = tmp_path / "legacy.pt"
    torch.save(official_state_dict(source, source.spec), path, _use_new_zipfile_serialization=False)
    target = _model(1)
    load_pretrained(target, target.spec, model_uri=str(path), log=lambda line: None)
    assert _same(source, target)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_precision_release_loads_with_its_rope_tables(tmp_path, dtype):
    """The official release files are fp16 (bf16 for some): every tensor, the RoPE tables too, is
    rounded to the file's dtype. The tables are compared in that dtype (rounding fp32 tables to
    fp16 moves them by up to 2.4e-4, bf16 1.9e-3); tables of another architecture are still refused."""
    from evaclip.pretrained import load_pretrained, official_state_dict

    dt = getattr(torch, dtype)
    source = _model(0)
    sd = {k: v.to(dt) for k, v in official_state_dict(source, source.spec).items()}
    torch.save({"state_dict": sd}, tmp_path / "half.pt")
    target = _model(1)
    (report,) = load_pretrained(
        target, target.spec, model_uri=str(tmp_path / "half.pt"), log=lambda line: None
    )
    assert report.clean and report.rope_tables == 2 * (1 + target.spec.vision.depth)
    for (name, got), want in zip(target.named_parameters(), source.parameters(), strict=True):
        assert torch.equal(got, want.to(dt).float().reshape(got.shape)), name
    sd["visual.rope.freqs_sin"] = (sd["visual.rope.freqs_sin"].float() * 0.9).to(dt)
    torch.save(sd, tmp_path / "other.pt")
    with pytest.raises(EvaplanError, match="differs from the RoPE table"):
        load_pretrained(target, target.spec, model_uri=str(tmp_path / "other.pt"), log=lambda line: None)


def test_s3_load_errors_are_bad_input(s3_env):
    """A weights URI that S3 cannot serve (no such key or bucket) is the user's input: exit 2, as the
    trainer documents, in one line."""
    import boto3

    from evaclip.pretrained import load_pretrained

    boto3.client("s3").create_bucket(Bucket="weights")
    model = _model(0)
    for uri in ("s3://weights/missing.pt", "s3://no-such-bucket/eva.pt"):
        with pytest.raises(EvaplanError) as err:
            load_pretrained(model, model.spec, model_uri=uri, log=lambda line: None)
        assert err.value.exit_code == 2, err.value.line()
        assert f"cannot download {uri}" in err.value.line() and "\n" not in err.value.line()
