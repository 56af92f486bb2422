"""Every bundled profile loads and is consistent; bad profiles fail with one clear line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from planner import profiles as prof
from planner.spec import HardwareSpec, ModelSpec, OfferingSpec

MODEL_NAMES = [
    "eva01-clip-g14",
    "eva02-clip-b16",
    "eva02-clip-l14",
    "eva02-clip-l14-336",
    "eva02-clip-e14",
    "eva02-clip-e14-plus",
    "eva-clip-8b",
    "eva-clip-8b-448",
    "eva-clip-18b",
    "eva-clip-debug",
    "eva01-clip-g14-plus",
    "openclip-vit-b32",
    "openclip-vit-b16",
    "openclip-vit-b16-plus-240",
    "openclip-vit-l14",
    "openclip-vit-h14",
    "openclip-vit-g14",
    "openclip-vit-bigg14",
    "cn-clip-vit-b16",
    "cn-clip-vit-l14",
    "cn-clip-vit-l14-336",
    "cn-clip-vit-h14",
]
# Unchanged copies of the official configs (tests/data/eva-model-configs/README.md: source, license).
OFFICIAL_CONFIGS = Path(__file__).resolve().parent / "data" / "eva-model-configs"
HARDWARE_NAMES = ["h100-sxm", "mi300x", "a100-80gb", "a100-40gb", "h200", "b200", "mi325x"]
# OpenCLIP's model configs (github mlfoundations/open_clip src/open_clip/model_configs/*.json, snapshot
# 89fb801), transcribed: embed_dim, vision (image, patch, width, layers, head_width, mlp_ratio), text
# (width, heads, layers). Unset keys are OpenCLIP's defaults (head_width 64, mlp_ratio 4.0).
OPENCLIP_CONFIGS = {
    "ViT-B-32.json": (512, (224, 32, 768, 12, 64, 4.0), (512, 8, 12)),
    "ViT-B-16.json": (512, (224, 16, 768, 12, 64, 4.0), (512, 8, 12)),
    "ViT-B-16-plus-240.json": (640, (240, 16, 896, 12, 64, 4.0), (640, 10, 12)),
    "ViT-L-14.json": (768, (224, 14, 1024, 24, 64, 4.0), (768, 12, 12)),
    "ViT-H-14.json": (1024, (224, 14, 1280, 32, 80, 4.0), (1024, 16, 24)),
    "ViT-g-14.json": (1024, (224, 14, 1408, 40, 88, 4.3637), (1024, 16, 24)),
    "ViT-bigG-14.json": (1280, (224, 14, 1664, 48, 104, 4.9231), (1280, 20, 32)),
}
# Chinese-CLIP's model configs (github OFA-Sys/Chinese-CLIP 7d661ef, cn_clip/clip/model_configs/*.json),
# transcribed: vision (embed_dim, image_resolution, vision_patch_size, vision_width, vision_layers,
# vision_head_width, default 64 in cn_clip/clip/model.py) and text (text_hidden_size,
# text_num_attention_heads, text_num_hidden_layers, text_intermediate_size / text_hidden_size, vocab_size).
CN_CLIP_VISION = {
    "ViT-B-16.json": (512, 224, 16, 768, 12, 64),
    "ViT-L-14.json": (768, 224, 14, 1024, 24, 64),
    "ViT-L-14-336.json": (768, 336, 14, 1024, 24, 64),
    "ViT-H-14.json": (1024, 224, 14, 1280, 32, 80),
}
CN_CLIP_TEXT = {
    "RoBERTa-wwm-ext-base-chinese.json": (768, 12, 12, 4.0, 21128),
    "RoBERTa-wwm-ext-large-chinese.json": (1024, 16, 24, 4.0, 21128),
}
CN_CLIP_CONTEXT = 52  # cn_clip/training/params.py: --context-length default 52
REQUIRED_OFFERINGS = ["aws-p5", "azure-nd-mi300x-v5", "oci-bm-gpu-mi300x", "coreweave-h100", "lambda-h100"]


def test_every_named_profile_exists():
    assert set(MODEL_NAMES) <= set(prof.index("models"))
    assert set(HARDWARE_NAMES) <= set(prof.index("hardware"))
    assert set(REQUIRED_OFFERINGS) <= set(prof.index("offerings"))
    assert any(prof.load_offering(n).kind == "on_prem" for n in prof.index("offerings"))


@pytest.mark.parametrize("name", sorted(prof.index("models")))
def test_model_profile_consistent(name: str):
    m = prof.load_model(name)
    assert isinstance(m, ModelSpec)
    assert m.vision.width % m.vision.head_width == 0
    assert m.vision.image_size % m.vision.patch_size == 0
    assert m.recipe.image_size % m.vision.patch_size == 0
    assert m.text.width % m.text.heads == 0
    assert m.recipe.samples_seen > 0 and m.recipe.global_batch > 0


@pytest.mark.schema
@pytest.mark.parametrize("name", sorted(n for n in prof.index("models") if not prof.load_model(n).debug))
def test_model_matches_official_config(name: str):
    """Our profile holds every architectural key of the official JSON, with the same value."""
    m = prof.load_model(name)
    cfg_name = m.config_source.split(", ")[1].split(" ")[0]
    if m.config_source.startswith("github mlfoundations/open_clip"):
        e, vis, txt = OPENCLIP_CONFIGS[cfg_name.rsplit("/", 1)[-1]]
        v = m.vision
        assert m.embed_dim == e
        assert (v.image_size, v.patch_size, v.width, v.depth, v.head_width, v.mlp_ratio) == vis
        assert (m.text.width, m.text.heads, m.text.layers, m.text.context_length) == (*txt, 77)
        assert (v.mlp, v.norm, v.rope, v.subln, v.postnorm) == ("gelu", "layernorm", False, False, False)
        return
    if m.config_source.startswith("github OFA-Sys/Chinese-CLIP"):
        text_name = m.config_source.split(" with ")[1].split(" ")[0]
        v, t = m.vision, m.text
        vis = (m.embed_dim, v.image_size, v.patch_size, v.width, v.depth, v.head_width)
        assert vis == CN_CLIP_VISION[cfg_name.rsplit("/", 1)[-1]]
        assert (t.width, t.heads, t.layers, t.mlp_ratio, t.vocab_size) == CN_CLIP_TEXT[text_name]
        assert t.context_length == CN_CLIP_CONTEXT
        assert (v.mlp, v.norm, v.rope, v.subln, v.postnorm) == ("gelu", "layernorm", False, False, False)
        return
    official = json.loads((OFFICIAL_CONFIGS / cfg_name).read_text())
    v, t = official["vision_cfg"], official["text_cfg"]
    assert m.embed_dim == official["embed_dim"]
    assert (
        m.vision.image_size,
        m.vision.patch_size,
        m.vision.width,
        m.vision.depth,
        m.vision.head_width,
    ) == (v["image_size"], v["patch_size"], v["width"], v["layers"], v["head_width"])
    assert m.vision.mlp_ratio == v["mlp_ratio"]
    assert (m.vision.mlp == "swiglu") == bool(v.get("naiveswiglu", False))
    assert (m.vision.norm == "rmsnorm") == bool(v.get("use_rms_norm", False))
    assert m.vision.qkv_bias == v.get("qkv_bias", True)
    assert m.vision.subln == v.get("subln", False)
    assert m.vision.rope == v.get("rope", False)
    assert m.vision.postnorm == v.get("postnorm", False)
    assert m.vision.drop_path_rate == v["drop_path_rate"]
    assert (m.text.context_length, m.text.vocab_size, m.text.width, m.text.heads, m.text.layers) == (
        t["context_length"],
        t["vocab_size"],
        t["width"],
        t["heads"],
        t["layers"],
    )


def test_debug_model_is_tiny():
    m = prof.load_model("eva-clip-debug")
    assert m.debug
    assert m.vision.width <= 128 and m.vision.depth <= 4 and m.vision.image_size <= 64
    assert m.text.width <= 64 and m.text.layers <= 4


@pytest.mark.parametrize("name", sorted(prof.index("hardware")))
def test_hardware_profile_consistent(name: str):
    h = prof.load_hardware(name)
    assert isinstance(h, HardwareSpec)
    assert h.gpus_per_node > 0
    for field in (
        "hbm_gib",
        "hbm_tbps",
        "bf16_dense_tflops",
        "tdp_w",
        "node_power_kw",
        "hbm_achieved_tbps",
        "host_cpu_cores",
        "image_decode_per_core_s",
    ):
        q = getattr(h, field)
        assert q.value > 0 and q.source and q.observed
    # Speed figures are measured rates below the datasheet's; a shipped profile holds no flat MFU
    # (mfu_default is a user override of the per-operation model).
    assert h.matmul.tflops.value <= h.bf16_dense_tflops.value
    assert h.hbm_achieved_tbps.value <= h.hbm_tbps.value
    assert h.mfu_default is None and h.compute_scale is None


@pytest.mark.parametrize("name", sorted(prof.index("offerings")))
def test_offering_profile_consistent(name: str):
    o = prof.load_offering(name)
    assert isinstance(o, OfferingSpec)
    hw = prof.load_hardware(o.hardware)
    assert o.gpus_per_node == hw.gpus_per_node
    for q in (o.on_demand_usd_per_node_hour, o.spot_usd_per_node_hour, o.committed_usd_per_node_hour):
        if q is not None:
            assert q.value > 0 and q.observed
    if o.spot_usd_per_node_hour is not None:
        assert o.spot_usd_per_node_hour.value < o.on_demand_usd_per_node_hour.value
    if o.on_prem is not None:
        assert o.on_prem.usd_per_node_hour(hw.node_power_kw.value, o.pue.value) > 0


def test_cli_list_and_show(cli):
    r = cli("profiles", "list")
    assert r.exit_code == 0
    assert "eva-clip-18b" in r.output and "mi300x" in r.output and "aws-p5" in r.output
    r = cli("profiles", "list", "--format", "json")
    rows = json.loads(r.output)
    assert {row["name"] for row in rows} >= set(MODEL_NAMES + HARDWARE_NAMES)
    r = cli("profiles", "show", "h100-sxm")
    data = yaml.safe_load(r.output)
    assert data["hbm_gib"]["value"] == 80 and "source" in data["hbm_gib"]
    r = cli("profiles", "show", "eva-clip-18b", "--format", "json")
    assert json.loads(r.output)["vision"]["width"] == 5120


def test_cli_validate_bundled(cli):
    r = cli("profiles", "validate")
    assert r.exit_code == 0, r.output
    assert r.output.count(" ok") >= len(MODEL_NAMES) + len(HARDWARE_NAMES)


# ------------------------------------------------------------------ user profiles override
def _bundled_yaml(kind: str, name: str) -> dict:
    return yaml.safe_load((prof.bundled_dir() / kind / f"{name}.yaml").read_text())


def test_user_profile_overrides_bundled(cli, user_profiles: Path):
    data = _bundled_yaml("hardware", "h100-sxm")
    data["hbm_gib"]["value"] = 96
    (user_profiles / "hardware" / "h100-sxm.yaml").write_text(yaml.safe_dump(data))
    r = cli("--profiles-dir", str(user_profiles), "profiles", "show", "h100-sxm", "--format", "json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["hbm_gib"]["value"] == 96
    r = cli("profiles", "show", "h100-sxm", "--format", "json", env={prof.ENV_VAR: str(user_profiles)})
    assert json.loads(r.output)["hbm_gib"]["value"] == 96


# ------------------------------------------------------------------ bad profiles: one clear line
def _write_bad(user_profiles: Path, kind: str, name: str, mutate) -> Path:
    data = _bundled_yaml(
        kind, {"hardware": "h100-sxm", "offerings": "aws-p5", "models": "eva02-clip-b16"}[kind]
    )
    data["name"] = name
    mutate(data)
    p = user_profiles / kind / f"{name}.yaml"
    p.write_text(yaml.safe_dump(data, sort_keys=False))
    return p


BAD_CASES = {
    "unknown-key": ("hardware", lambda d: d.update(hbm_gb=80), "hbm_gb", "remove it"),
    "missing-key": ("hardware", lambda d: d.pop("tdp_w"), "tdp_w", "add it"),
    "wrong-type": ("hardware", lambda d: d.update(gpus_per_node="eight"), "gpus_per_node", "integer"),
    "zero-gpus": ("hardware", lambda d: d.update(gpus_per_node=0), "gpus_per_node", "greater than 0"),
    "negative-price": (
        "offerings",
        lambda d: d["on_demand_usd_per_node_hour"].update(value=-1.0),
        "on_demand_usd_per_node_hour.value",
        "greater than 0",
    ),
    "nan-price": (
        "offerings",
        lambda d: d["on_demand_usd_per_node_hour"].update(value=float("nan")),
        "on_demand_usd_per_node_hour.value",
        "finite",
    ),
    "no-date": (
        "offerings",
        lambda d: d["on_demand_usd_per_node_hour"].pop("observed"),
        "observed",
        "add it",
    ),
    "bad-heads": ("models", lambda d: d["vision"].update(head_width=100), "divisible", "head_width"),
    "bad-patch": ("models", lambda d: d["vision"].update(image_size=225), "divisible", "patch_size"),
}


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_profile_one_line(cli, user_profiles: Path, case: str):
    kind, mutate, field, fix = BAD_CASES[case]
    path = _write_bad(user_profiles, kind, f"bad-{case}", mutate)
    r = cli("profiles", "validate", str(path))
    assert r.exit_code == 2
    err = r.stderr.strip()
    assert err.count("\n") == 0, err
    assert err.startswith("error: ") and str(path) in err and field in err and fix in err
    assert "Traceback" not in r.output


def test_malformed_yaml(cli, user_profiles: Path):
    p = user_profiles / "hardware" / "broken.yaml"
    p.write_text("name: broken\nhbm_gib: {value: 80, source: x\n")
    r = cli("profiles", "validate", str(p))
    assert r.exit_code == 2
    assert "malformed YAML" in r.stderr and "broken.yaml" in r.stderr and "line" in r.stderr


def test_name_must_match_file(cli, user_profiles: Path):
    p = _write_bad(user_profiles, "hardware", "other", lambda d: d.update(name="h100-sxm"))
    r = cli("profiles", "validate", str(p))
    assert r.exit_code == 2 and "differs from the file name" in r.stderr


def test_unknown_profile_name(cli):
    r = cli("profiles", "show", "h100")
    assert r.exit_code == 2 and "no profile named 'h100'" in r.stderr


def test_missing_profiles_dir(cli, tmp_path: Path):
    r = cli("--profiles-dir", str(tmp_path / "nope"), "profiles", "list")
    assert r.exit_code == 2 and "does not exist" in r.stderr
