"""Parameter tensors of an EVA-CLIP model, derived from its profile the way the official code builds it.

One list of tensors (name, shape, numel, tower, block) is the single source for every count the
planner uses: totals per tower, the largest "layer" as DeepSpeed's ZeRO-3 estimator defines it,
and which tensors stay resident under ZeRO-3's `stage3_param_persistence_threshold`.

What the official code builds (github baaivision/EVA snapshot 5623d08, EVA-CLIP/rei/eva_clip and
EVA-CLIP-18B/shinji/eva_clip, `eva_vit_model.py`, and OpenCLIP's `TextTransformer`):

- vision: `patch_embed.proj` Conv2d(3→w, k=p, s=p) with bias; `cls_token` (1,1,w); `pos_embed`
  (1, (image/p)²+1, w); per block `norm1`, `attn`, `norm2`, `mlp`; final `norm`; `head` Linear(w→embed).
  `attn`: with sub-LN, separate `q_proj`/`k_proj`/`v_proj` Linear(w→w, bias=False); without it one fused
  `qkv` Linear(w→3w, bias=False) (the official `Attention.__init__` branches on `subln`). `qkv_bias`
  adds `q_bias` and `v_bias` (w each, no k-bias). Sub-LN adds `inner_attn_ln` (width w) before `proj`
  Linear(w→w, bias) and `ffn_ln` (width mlp_hidden) before the MLP output layer. GELU MLP `fc1`, `fc2`;
  SwiGLU `w1`, `w2` (gate), `w3` (out), all with bias. LayerNorm has weight and bias, RMSNorm weight
  only. RoPE holds buffers, no parameters. Head bias: the rei code (EVA01/EVA02) builds
  `nn.Linear(w, embed)` with a bias, the EVA-CLIP-8B/18B code (shinji) `bias=qkv_bias`; every rei
  model has `qkv_bias: true` and 8B/18B `false`, so `head_bias(vision)` = `qkv_bias` reproduces both
  (official totals: EVA-CLIP-8B 8,220,748,545, EVA-CLIP-18B 18,325,482,241).
- text: `token_embedding` (vocab, w), `positional_embedding` (ctx, w), per block `ln_1`,
  `attn.in_proj_weight` (3w, w) + `attn.in_proj_bias` (3w), `attn.out_proj` Linear(w→w, bias), `ln_2`,
  `mlp.c_fc` Linear(w→mlp_hidden), `mlp.c_proj` Linear(mlp_hidden→w); `ln_final` (LayerNorm);
  `text_projection` (w, embed) without bias.
- `logit_scale`: one scalar.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

from planner.spec import ModelSpec, VisionTower
from planner.terms import Term, identifier

Tower = Literal["vision", "text", "logit_scale"]


@dataclass(frozen=True)
class ParamTensor:
    """One `nn.Parameter` of the model, named as in the official state dict."""

    name: str
    shape: tuple[int, ...]
    tower: Tower
    block: int | None = None

    @property
    def numel(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n

    @property
    def module(self) -> str:
        """The module that owns this parameter directly (`recurse=False`), as DeepSpeed groups them."""
        return self.name.rsplit(".", 1)[0] if "." in self.name else ""


@dataclass(frozen=True)
class ParamCounts:
    vision: int
    text: int
    logit_scale: int
    total: int
    largest_layer: int  # max over modules of the params they own directly (DeepSpeed model_to_params)
    largest_layer_module: str


def head_bias(vision: VisionTower) -> bool:
    """Whether the vision head Linear(width → embed_dim) has a bias: the official code ties it to
    `qkv_bias` (shinji `eva_vit_model.py`: `nn.Linear(embed_dim, num_classes, bias=qkv_bias)`; the
    rei code always has one, and all its models set `qkv_bias`)."""
    return vision.qkv_bias


def _norm(prefix: str, width: int, rms: bool, tower: Tower, block: int | None) -> list[ParamTensor]:
    out = [ParamTensor(f"{prefix}.weight", (width,), tower, block)]
    if not rms:
        out.append(ParamTensor(f"{prefix}.bias", (width,), tower, block))
    return out


def _linear(
    prefix: str, n_in: int, n_out: int, bias: bool, tower: Tower, block: int | None
) -> list[ParamTensor]:
    out = [ParamTensor(f"{prefix}.weight", (n_out, n_in), tower, block)]
    if bias:
        out.append(ParamTensor(f"{prefix}.bias", (n_out,), tower, block))
    return out


def _vision_tensors(model: ModelSpec, image_size: int | None = None) -> list[ParamTensor]:
    v = model.vision
    w, f, rms = v.width, v.mlp_hidden, v.norm == "rmsnorm"
    grid = (image_size or v.image_size) // v.patch_size
    t: Tower = "vision"
    out = [
        ParamTensor("visual.cls_token", (1, 1, w), t),
        ParamTensor("visual.pos_embed", (1, grid * grid + 1, w), t),
        ParamTensor("visual.patch_embed.proj.weight", (w, 3, v.patch_size, v.patch_size), t),
        ParamTensor("visual.patch_embed.proj.bias", (w,), t),
    ]
    for i in range(v.depth):
        b = f"visual.blocks.{i}"
        out += _norm(f"{b}.norm1", w, rms, t, i)
        if v.qkv_bias:
            out += [ParamTensor(f"{b}.attn.q_bias", (w,), t, i), ParamTensor(f"{b}.attn.v_bias", (w,), t, i)]
        if v.subln:
            for proj in ("q_proj", "k_proj", "v_proj"):
                out += _linear(f"{b}.attn.{proj}", w, w, False, t, i)
            out += _norm(f"{b}.attn.inner_attn_ln", w, rms, t, i)
        else:
            out += _linear(f"{b}.attn.qkv", w, 3 * w, False, t, i)
        out += _linear(f"{b}.attn.proj", w, w, True, t, i)
        out += _norm(f"{b}.norm2", w, rms, t, i)
        if v.mlp == "swiglu":
            out += _linear(f"{b}.mlp.w1", w, f, True, t, i)
            out += _linear(f"{b}.mlp.w2", w, f, True, t, i)
            if v.subln:
                out += _norm(f"{b}.mlp.ffn_ln", f, rms, t, i)
            out += _linear(f"{b}.mlp.w3", f, w, True, t, i)
        else:
            out += _linear(f"{b}.mlp.fc1", w, f, True, t, i)
            if v.subln:
                out += _norm(f"{b}.mlp.ffn_ln", f, rms, t, i)
            out += _linear(f"{b}.mlp.fc2", f, w, True, t, i)
    out += _norm("visual.norm", w, rms, t, None)
    out += _linear("visual.head", w, model.embed_dim, head_bias(v), t, None)
    return out


def _text_tensors(model: ModelSpec) -> list[ParamTensor]:
    x = model.text
    w, f = x.width, x.mlp_hidden
    t: Tower = "text"
    out = [
        ParamTensor("text.token_embedding.weight", (x.vocab_size, w), t),
        ParamTensor("text.positional_embedding", (x.context_length, w), t),
    ]
    for i in range(x.layers):
        b = f"text.transformer.resblocks.{i}"
        out += _norm(f"{b}.ln_1", w, False, t, i)
        out += [
            ParamTensor(f"{b}.attn.in_proj_weight", (3 * w, w), t, i),
            ParamTensor(f"{b}.attn.in_proj_bias", (3 * w,), t, i),
        ]
        out += _linear(f"{b}.attn.out_proj", w, w, True, t, i)
        out += _norm(f"{b}.ln_2", w, False, t, i)
        out += _linear(f"{b}.mlp.c_fc", w, f, True, t, i)
        out += _linear(f"{b}.mlp.c_proj", f, w, True, t, i)
    out += _norm("text.ln_final", w, False, t, None)
    out.append(ParamTensor("text.text_projection", (w, model.embed_dim), t))
    return out


@lru_cache(maxsize=128)
def _tensors_cached(model: ModelSpec) -> tuple[ParamTensor, ...]:
    return (*_vision_tensors(model), *_text_tensors(model), ParamTensor("logit_scale", (), "logit_scale"))


def param_tensors(model: ModelSpec) -> list[ParamTensor]:
    """Every parameter tensor, in forward order (vision tower, text tower, logit_scale)."""
    return list(_tensors_cached(model))


@lru_cache(maxsize=128)
def count_params(model: ModelSpec) -> ParamCounts:
    """Totals per tower and DeepSpeed's `largest_layer_params` (stage3.model_to_params)."""
    tensors = _tensors_cached(model)
    by_module: dict[str, int] = {}
    for p in tensors:
        by_module[p.module] = by_module.get(p.module, 0) + p.numel
    largest = int(largest_layer_term(model).value)
    module = next(m for m, numel in by_module.items() if numel == largest)
    vision, text = int(tower_params_term(model, "vision").value), int(tower_params_term(model, "text").value)
    logit_scale = sum(p.numel for p in tensors if p.tower == "logit_scale")
    return ParamCounts(
        vision=vision,
        text=text,
        logit_scale=logit_scale,
        total=int(total_params_term(vision, text, logit_scale).value),
        largest_layer=largest,
        largest_layer_module=module,
    )


def total_params_term(vision: int, text: int, logit_scale: int) -> Term:
    return Term("vision + text + logit_scale", {"vision": vision, "text": text, "logit_scale": logit_scale})


def _part(p: ParamTensor) -> str:
    """A tensor outside the blocks by its own name without the tower ("visual.patch_embed.proj.weight"
    → "patch_embed.proj"): the weight and bias of one module are one part."""
    name = p.name.split(".", 1)[1]
    return name.rsplit(".", 1)[0] if name.endswith((".weight", ".bias")) else name


def tower_params_term(model: ModelSpec, tower: Tower) -> Term:
    """A tower's parameters: each tensor group outside the blocks, and layers × one block's (every
    block of a tower has the same tensors), summed in forward order."""
    parts: dict[str, int] = {}
    blocks: dict[int, int] = {}
    for p in _tensors_cached(model):
        if p.tower != tower:
            continue
        if p.block is None:
            key = identifier(_part(p))
            parts[key] = parts.get(key, 0) + p.numel
        else:
            parts.setdefault("layers * params_per_block", 0)
            blocks[p.block] = blocks.get(p.block, 0) + p.numel
    if len(set(blocks.values())) > 1:
        raise ValueError(f"the {tower} tower's blocks differ in size: {sorted(set(blocks.values()))}")
    inputs: dict[str, int] = {k: v for k, v in parts.items() if k != "layers * params_per_block"}
    if blocks:
        inputs.update(layers=len(blocks), params_per_block=blocks[0])
    return Term(" + ".join(parts), inputs)


def largest_layer_term(model: ModelSpec) -> Term:
    """DeepSpeed's largest_layer_params: the most parameters one module owns directly, as the max
    over module kinds (a block's module stands for the same module of every block: block 0's)."""
    kinds: dict[str, int] = {}
    for p in _tensors_cached(model):
        if p.block not in (None, 0):
            continue
        module = p.module.replace(".0.", ".", 1) if p.block == 0 else p.module
        kind = identifier(module or "logit_scale")
        kinds[kind] = kinds.get(kind, 0) + p.numel
    return Term(f"max({', '.join(kinds)})", kinds)


@dataclass(frozen=True)
class Zero3Residency:
    """How ZeRO-3 treats the tensors of a model (DeepSpeed 0.19.8, partition_parameters / coordinator).

    persistent: numel of tensors with numel ≤ stage3_param_persistence_threshold; they stay gathered
    on every rank and are all-gathered once per optimizer step after the update.
    gathered: numel of the other tensors, all-gathered in every micro-batch's forward.
    regathered_backward: numel of gathered tensors that the coordinator releases after forward and
    fetches again in backward: those whose next use lies more than stage3_max_reuse_distance
    elements of traced parameters ahead (PartitionedParameterCoordinator.__params_to_release).
    modules_gathered / modules_regathered: modules owning such tensors; ZeRO-3 fetches one module's
    parameters with one all_gather_coalesced call, so these are the calls per micro-batch.
    (Each tensor is also padded to a multiple of the world size before it is partitioned: at most
    N−1 elements per tensor, not modelled.)
    """

    persistent: int
    gathered: int
    regathered_backward: int
    count_gathered: int
    count_persistent: int
    modules_gathered: int
    modules_regathered: int


@lru_cache(maxsize=512)
def zero3_residency(model: ModelSpec, persistence_threshold: int, max_reuse_distance: int) -> Zero3Residency:
    tensors = _tensors_cached(model)
    persistent = gathered = regathered = n_g = n_p = 0
    # Between a tensor's forward use and its backward use the trace holds, roughly, every parameter
    # used after it in forward, twice (forward, then backward in reverse order): 2 × suffix numel.
    suffix = 0
    suffix_after: list[int] = [0] * len(tensors)
    for i in range(len(tensors) - 1, -1, -1):
        suffix_after[i] = suffix
        suffix += tensors[i].numel
    mods_g: set[str] = set()
    mods_r: set[str] = set()
    for p, after in zip(tensors, suffix_after, strict=True):
        if p.numel <= persistence_threshold:
            persistent += p.numel
            n_p += 1
        else:
            gathered += p.numel
            n_g += 1
            mods_g.add(p.module)
            if 2 * after >= max_reuse_distance:
                regathered += p.numel
                mods_r.add(p.module)
    return Zero3Residency(persistent, gathered, regathered, n_g, n_p, len(mods_g), len(mods_r))
