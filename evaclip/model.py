"""EVA-CLIP as nn.Modules, built from a model profile (planner.spec.ModelSpec).

One architecture source: the profile. The planner counts parameters and FLOPs from the same
profile, and tests/evaclip check that this module has exactly the planner's parameter count and
FLOPs (FlopCounterMode on the meta device) for every bundled model.

Vision tower: the EVA ViT of baaivision/EVA, as its model configs' flags select it
(https://github.com/baaivision/EVA/blob/master/EVA-CLIP/rei/eva_clip/eva_vit_model.py; the
profile's `config_source` names the config JSON):
- patch embed Conv2d(3 → width, kernel = stride = patch) with bias, a CLS token, learned absolute
  position embedding over (image/patch)² + 1 tokens;
- blocks: attention with a q-bias and a v-bias but no k-bias (`qkv_bias`), an optional norm before
  the output projection (`subln`), 2-D RoPE on the patch tokens (`rope`); MLP either GELU (fc1, fc2)
  or SwiGLU (w1, w2 gate, w3 out) with an optional norm before the output layer (`subln`);
  pre-norm, or post-norm (`postnorm`: the norm is applied to each sub-layer's output before the
  residual add, as the official `postnorm` branch does); LayerNorm (weight + bias) or RMSNorm
  (weight only);
- final norm, CLS token → Linear(width → embed_dim), with a bias when `qkv_bias` (the official code:
  rei always, shinji `bias=qkv_bias`; planner.params.head_bias says the same).
Initialisation as the official code: vision Linears trunc-normal 0.02 (biases 0), then
`fix_init_weight` divides block i's (1-based) attention-output and MLP-output weights by √(2i), and
the head is scaled by `init_scale` 0.001; the patch Conv2d keeps PyTorch's default; text tower as
OpenCLIP `TextTransformer.init_parameters` (see TextTransformer).
Text tower: OpenCLIP's causal TextTransformer (token + learned position embedding, pre-norm blocks
with a fused in-projection with bias, GELU MLP 4×, final LayerNorm, bias-free projection taken at
the end-of-text token, which has the largest id in the CLIP vocabulary). One learnable logit scale.

Attention runs through flash-attn (`flash_attn_func`) when it is importable, the tensors are on a
GPU in bf16/fp16; otherwise through `torch.nn.functional.scaled_dot_product_attention`.
`set_attention_backend` forces one (benchmarks/gpu_check.py times both); `last_attention_backend()`
says which one ran.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

if TYPE_CHECKING:  # annotations only: the model needs torch alone (benchmarks/gpu_check.py on a bare GPU box)
    from planner.spec import ModelSpec, TextTower, VisionTower

# CLIP's initial temperature 0.07 and its cap at 100 (Radford et al. 2021, §2.5). As the official
# training loop (EVA-CLIP/rei/training/train.py), the trainer clamps the parameter in place to
# [0, ln 100] after every optimizer step (evaclip.train.clamp_logit_scale); forward only exponentiates.
LOGIT_SCALE_INIT = math.log(1 / 0.07)
LOGIT_SCALE_MIN = 0.0
LOGIT_SCALE_MAX = math.log(100.0)
# EVA02's RoPE frequencies are defined on the 16×16 grid of its pre-training (EVA-CLIP configs:
# `pt_hw_seq_len: 16`) and interpolated to the actual grid (`intp_freq: true`); theta 10000.
ROPE_PT_SEQ_LEN = 16
ROPE_THETA = 10000.0
# ViT initialisation: truncated normal, std 0.02 (timm `trunc_normal_(std=.02)`, EVA `_init_weights`).
INIT_STD = 0.02
# The official EVAVisionTransformer's `init_scale` default: the head's initial weights × 0.001.
HEAD_INIT_SCALE = 0.001

AttentionBackend = Literal["auto", "flash", "sdpa"]
_backend: AttentionBackend = "auto"
_last_backend: str | None = None


_UNRESOLVED = object()
_flash_fn: object = _UNRESOLVED


def _flash_attn_func() -> Callable | None:
    """flash-attn's `flash_attn_func` (CUDA or ROCm build) or None. Resolved once and kept in a
    module global, so that compiled blocks read a global instead of tracing an import."""
    global _flash_fn
    if _flash_fn is _UNRESOLVED:
        try:
            from flash_attn import flash_attn_func  # type: ignore[import-not-found]
        except Exception:  # not installed, or built for another torch / GPU
            flash_attn_func = None
        _flash_fn = flash_attn_func
    return _flash_fn  # type: ignore[return-value]


def set_attention_backend(backend: AttentionBackend) -> None:
    """'auto' (flash-attn where it can run, else SDPA), 'flash' (required) or 'sdpa'."""
    global _backend
    if backend not in ("auto", "flash", "sdpa"):
        raise ValueError(f"unknown attention backend {backend!r}")
    if backend == "flash" and _flash_attn_func() is None:
        raise RuntimeError("attention backend 'flash' requested but flash_attn is not importable")
    _backend = backend


def last_attention_backend() -> str | None:
    """'flash' or 'sdpa': what the most recent attention call used."""
    return _last_backend


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, causal: bool) -> torch.Tensor:
    """Softmax attention over (batch, heads, seq, head_dim) tensors; returns the same layout."""
    global _last_backend
    use_flash = False
    if _backend != "sdpa" and q.is_cuda and q.dtype in (torch.float16, torch.bfloat16):
        fn = _flash_attn_func()
        use_flash = fn is not None
    if _backend == "flash" and not use_flash:
        raise RuntimeError("flash attention needs CUDA tensors in bf16/fp16")
    if use_flash:
        _last_backend = "flash"
        # flash_attn_func takes (batch, seq, heads, head_dim).
        out = fn(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), causal=causal)
        return out.transpose(1, 2)
    _last_backend = "sdpa"
    return F.scaled_dot_product_attention(q, k, v, is_causal=causal)


# --------------------------------------------------------------------------- building blocks
class Linear(nn.Linear):
    """nn.Linear with ViT initialisation (trunc-normal 0.02 × `init_scale`, bias 0) done in
    reset_parameters, i.e. inside the constructor, so that it also holds under deepspeed.zero.Init
    (which partitions a module's parameters as soon as its constructor returns). `init_scale` is
    the official post-init rescaling (`fix_init_weight`'s 1/√(2·layer), the head's 0.001) folded in."""

    def __init__(self, n_in: int, n_out: int, bias: bool = True, *, init_scale: float = 1.0) -> None:
        object.__setattr__(self, "init_scale", init_scale)  # read by reset_parameters in super().__init__
        super().__init__(n_in, n_out, bias=bias)

    def reset_parameters(self) -> None:
        nn.init.trunc_normal_(self.weight, std=INIT_STD)
        if self.init_scale != 1.0:
            with torch.no_grad():
                self.weight.mul_(self.init_scale)
        if self.bias is not None:
            nn.init.zeros_(self.bias)


class NormalLinear(nn.Linear):
    """nn.Linear as OpenCLIP's text tower initialises it: weight ~ N(0, std²); the bias keeps
    PyTorch's default (uniform ±1/√fan_in) unless `zero_bias` (nn.MultiheadAttention's out_proj)."""

    def __init__(self, n_in: int, n_out: int, *, std: float, zero_bias: bool = False) -> None:
        object.__setattr__(self, "init_std", std)
        object.__setattr__(self, "zero_bias", zero_bias)
        super().__init__(n_in, n_out)

    def reset_parameters(self) -> None:
        super().reset_parameters()
        nn.init.normal_(self.weight, std=self.init_std)
        if self.zero_bias:
            nn.init.zeros_(self.bias)


class RMSNorm(nn.Module):
    """RMSNorm with a weight and no bias (EVA-CLIP-8B/18B `use_rms_norm: true`)."""

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        out = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return out.to(x.dtype) * self.weight


def make_norm(kind: str, dim: int, eps: float) -> nn.Module:
    return RMSNorm(dim, eps) if kind == "rmsnorm" else nn.LayerNorm(dim, eps=eps)


class DropPath(nn.Module):
    """Stochastic depth per sample (timm `DropPath`), used by EVA01-CLIP-g (drop_path_rate 0.4)."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep


class RotaryEmbedding2D(nn.Module):
    """EVA02's 2-D RoPE (`VisionRotaryEmbeddingFast`): half of each head's channels rotate with the
    row index, half with the column index; frequencies interpolated from a 16×16 grid."""

    def __init__(self, head_width: int, grid: int) -> None:
        super().__init__()
        dim = head_width // 2
        freqs = 1.0 / (ROPE_THETA ** (torch.arange(0, dim, 2)[: dim // 2].float() / dim))
        t = torch.arange(grid, dtype=torch.float32) / grid * ROPE_PT_SEQ_LEN
        freqs = torch.einsum("i,f->if", t, freqs).repeat_interleave(2, dim=-1)  # (grid, dim)
        rows = freqs[:, None, :].expand(grid, grid, dim)
        cols = freqs[None, :, :].expand(grid, grid, dim)
        f2d = torch.cat([rows, cols], dim=-1).reshape(grid * grid, head_width)
        # Buffers, not parameters, and not saved: they follow from the architecture.
        self.register_buffer("cos", f2d.cos(), persistent=False)
        self.register_buffer("sin", f2d.sin(), persistent=False)

    @staticmethod
    def _rotate_half(x: torch.Tensor) -> torch.Tensor:
        x = x.unflatten(-1, (-1, 2))
        x1, x2 = x.unbind(-1)
        return torch.stack((-x2, x1), dim=-1).flatten(-2)

    def forward(self, t: torch.Tensor, keep: torch.Tensor | None) -> torch.Tensor:
        """t: (batch, heads, patches, head_width); keep: kept patch indices (batch, patches) or None."""
        # In the activations' dtype: fp32 tables would promote bf16 q/k to fp32 (twice the traffic).
        cos, sin = self.cos.to(t.dtype), self.sin.to(t.dtype)
        if keep is not None:
            cos, sin = cos[keep].unsqueeze(1), sin[keep].unsqueeze(1)  # (batch, 1, patches, hw)
        return t * cos + self._rotate_half(t) * sin


# --------------------------------------------------------------------------- vision tower
class EvaAttention(nn.Module):
    """Parameters named and shaped as the official `Attention`: with sub-LN separate `q_proj`,
    `k_proj`, `v_proj` (bias-free), without it one fused `qkv`; `q_bias` and `v_bias` when
    `qkv_bias` (the k-bias is a constant zero); `inner_attn_ln` before `proj` with sub-LN."""

    def __init__(self, cfg: VisionTower, out_scale: float = 1.0) -> None:
        super().__init__()
        w = cfg.width
        self.heads = cfg.heads
        if cfg.qkv_bias:
            self.q_bias = nn.Parameter(torch.zeros(w))
            self.v_bias = nn.Parameter(torch.zeros(w))
        else:
            self.q_bias = self.v_bias = None
        self.separate_qkv = cfg.subln
        if cfg.subln:
            self.q_proj = Linear(w, w, bias=False)
            self.k_proj = Linear(w, w, bias=False)
            self.v_proj = Linear(w, w, bias=False)
            self.inner_attn_ln = make_norm(cfg.norm, w, cfg.norm_eps)
        else:
            self.qkv = Linear(w, 3 * w, bias=False)
            self.inner_attn_ln = nn.Identity()
        self.proj = Linear(w, w, init_scale=out_scale)

    def _qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if self.separate_qkv:
            return (
                F.linear(x, self.q_proj.weight, self.q_bias),
                self.k_proj(x),
                F.linear(x, self.v_proj.weight, self.v_bias),
            )
        bias = None
        if self.q_bias is not None:
            bias = torch.cat((self.q_bias, torch.zeros_like(self.v_bias), self.v_bias))
        return F.linear(x, self.qkv.weight, bias).chunk(3, dim=-1)

    def forward(
        self, x: torch.Tensor, rope: RotaryEmbedding2D | None, keep: torch.Tensor | None
    ) -> torch.Tensor:
        b, s, w = x.shape
        q, k, v = (t.view(b, s, self.heads, -1).transpose(1, 2) for t in self._qkv(x))
        if rope is not None:  # rotate the patch tokens only; the CLS token (index 0) keeps its values
            q = torch.cat((q[:, :, :1], rope(q[:, :, 1:], keep)), dim=2)
            k = torch.cat((k[:, :, :1], rope(k[:, :, 1:], keep)), dim=2)
        out = attention(q, k, v, causal=False).transpose(1, 2).reshape(b, s, w)
        return self.proj(self.inner_attn_ln(out))


class EvaMlp(nn.Module):
    """GELU MLP (fc1, fc2) or SwiGLU (w1, w2 gate, w3 out), each with an optional sub-LN."""

    def __init__(self, cfg: VisionTower, out_scale: float = 1.0) -> None:
        super().__init__()
        w, hidden = cfg.width, cfg.mlp_hidden
        self.swiglu = cfg.mlp == "swiglu"
        if self.swiglu:
            self.w1 = Linear(w, hidden)
            self.w2 = Linear(w, hidden)
            self.w3 = Linear(hidden, w, init_scale=out_scale)
        else:
            self.fc1 = Linear(w, hidden)
            self.fc2 = Linear(hidden, w, init_scale=out_scale)
        self.ffn_ln = make_norm(cfg.norm, hidden, cfg.norm_eps) if cfg.subln else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.swiglu:
            return self.w3(self.ffn_ln(F.silu(self.w1(x)) * self.w2(x)))
        return self.fc2(self.ffn_ln(F.gelu(self.fc1(x))))


class EvaBlock(nn.Module):
    def __init__(self, cfg: VisionTower, drop_path: float, layer_id: int) -> None:
        super().__init__()
        self.postnorm = cfg.postnorm
        # Official `fix_init_weight`: the output weights of block `layer_id` (1-based) ÷ √(2·layer_id).
        out_scale = 1.0 / math.sqrt(2.0 * layer_id)
        self.norm1 = make_norm(cfg.norm, cfg.width, cfg.norm_eps)
        self.attn = EvaAttention(cfg, out_scale)
        self.norm2 = make_norm(cfg.norm, cfg.width, cfg.norm_eps)
        self.mlp = EvaMlp(cfg, out_scale)
        self.drop_path = DropPath(drop_path)

    def forward(
        self, x: torch.Tensor, rope: RotaryEmbedding2D | None, keep: torch.Tensor | None
    ) -> torch.Tensor:
        if self.postnorm:
            x = x + self.drop_path(self.norm1(self.attn(x, rope, keep)))
            return x + self.drop_path(self.norm2(self.mlp(x)))
        x = x + self.drop_path(self.attn(self.norm1(x), rope, keep))
        return x + self.drop_path(self.mlp(self.norm2(x)))


def patch_dropout(x: torch.Tensor, prob: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Keep the CLS token and a random int((1 − prob) · patches) of the patch tokens (OpenCLIP
    PatchDropout, exclude_first_token=True). Returns the kept tokens and the kept patch indices."""
    b, n = x.shape[0], x.shape[1] - 1
    keep_n = max(1, int(n * (1.0 - prob)))
    keep = torch.randn(b, n, device=x.device).topk(keep_n, dim=-1).indices
    patches = x[:, 1:].gather(1, keep.unsqueeze(-1).expand(-1, -1, x.shape[-1]))
    return torch.cat((x[:, :1], patches), dim=1), keep


class PatchEmbed(nn.Module):
    def __init__(self, width: int, patch_size: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, width, kernel_size=patch_size, stride=patch_size)


class EvaVisionTransformer(nn.Module):
    def __init__(self, cfg: VisionTower, embed_dim: int, image_size: int | None = None) -> None:
        super().__init__()
        image_size = image_size or cfg.image_size
        if image_size % cfg.patch_size:
            raise ValueError(f"image_size {image_size} is not divisible by patch_size {cfg.patch_size}")
        self.cfg = cfg
        self.image_size = image_size
        self.patch_size = cfg.patch_size
        grid = image_size // cfg.patch_size
        self.cls_token = nn.Parameter(torch.zeros(1, 1, cfg.width))
        self.pos_embed = nn.Parameter(torch.zeros(1, grid * grid + 1, cfg.width))
        nn.init.trunc_normal_(self.cls_token, std=INIT_STD)
        nn.init.trunc_normal_(self.pos_embed, std=INIT_STD)
        self.patch_embed = PatchEmbed(cfg.width, cfg.patch_size)
        self.rope = RotaryEmbedding2D(cfg.head_width, grid) if cfg.rope else None
        # timm's stochastic-depth rule: the rate grows linearly from 0 to drop_path_rate.
        rates = [cfg.drop_path_rate * i / max(cfg.depth - 1, 1) for i in range(cfg.depth)]
        self.blocks = nn.ModuleList(EvaBlock(cfg, r, i + 1) for i, r in enumerate(rates))
        self.norm = make_norm(cfg.norm, cfg.width, cfg.norm_eps)
        # No bias when qkv_bias is off (EVA-CLIP-8B/18B), as planner.params.head_bias.
        self.head = Linear(cfg.width, embed_dim, bias=cfg.qkv_bias, init_scale=HEAD_INIT_SCALE)
        self.patch_dropout = 0.0
        self.grad_checkpointing = False

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed.proj(images).flatten(2).transpose(1, 2)  # (b, patches, width)
        x = torch.cat((self.cls_token.expand(x.shape[0], -1, -1).to(x.dtype), x), dim=1)
        x = x + self.pos_embed.to(x.dtype)
        keep = None
        if self.training and self.patch_dropout > 0:
            x, keep = patch_dropout(x, self.patch_dropout)
        for blk in self.blocks:
            if self.grad_checkpointing and self.training:
                x = checkpoint(blk, x, self.rope, keep, use_reentrant=False)
            else:
                x = blk(x, self.rope, keep)
        return self.head(self.norm(x)[:, 0])


# --------------------------------------------------------------------------- text tower
def _text_proj_std(cfg: TextTower) -> float:
    """OpenCLIP `proj_std`: width^-0.5 · (2 · layers)^-0.5, for out_proj and c_proj."""
    return cfg.width**-0.5 * (2 * cfg.layers) ** -0.5


class TextAttention(nn.Module):
    """nn.MultiheadAttention's parameters (`in_proj_weight` 3w×w, `in_proj_bias`, `out_proj` with
    bias), computed with causal SDPA / flash attention."""

    def __init__(self, cfg: TextTower) -> None:
        super().__init__()
        w = cfg.width
        self.heads = cfg.heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * w, w))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * w))
        nn.init.normal_(self.in_proj_weight, std=w**-0.5)  # OpenCLIP attn_std
        self.out_proj = NormalLinear(w, w, std=_text_proj_std(cfg), zero_bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, s, w = x.shape
        qkv = F.linear(x, self.in_proj_weight, self.in_proj_bias)
        q, k, v = qkv.view(b, s, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        out = attention(q, k, v, causal=True).transpose(1, 2).reshape(b, s, w)
        return self.out_proj(out)


class TextMlp(nn.Module):
    def __init__(self, cfg: TextTower) -> None:
        super().__init__()
        self.c_fc = NormalLinear(cfg.width, cfg.mlp_hidden, std=(2 * cfg.width) ** -0.5)  # OpenCLIP fc_std
        self.c_proj = NormalLinear(cfg.mlp_hidden, cfg.width, std=_text_proj_std(cfg))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c_proj(F.gelu(self.c_fc(x)))


class TextBlock(nn.Module):
    """OpenCLIP `ResidualAttentionBlock`: pre-norm attention and GELU MLP."""

    def __init__(self, cfg: TextTower) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.width, eps=cfg.norm_eps)
        self.attn = TextAttention(cfg)
        self.ln_2 = nn.LayerNorm(cfg.width, eps=cfg.norm_eps)
        self.mlp = TextMlp(cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class TextBlocks(nn.Module):
    def __init__(self, cfg: TextTower) -> None:
        super().__init__()
        self.resblocks = nn.ModuleList(TextBlock(cfg) for _ in range(cfg.layers))


class TextTransformer(nn.Module):
    def __init__(self, cfg: TextTower, embed_dim: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.token_embedding = nn.Embedding(cfg.vocab_size, cfg.width)
        self.positional_embedding = nn.Parameter(torch.zeros(cfg.context_length, cfg.width))
        # OpenCLIP TextTransformer.init_parameters: token 0.02, position 0.01, projection width^-0.5;
        # the blocks' weights in TextAttention / TextMlp (attn width^-0.5, fc (2·width)^-0.5, proj
        # width^-0.5 · (2·layers)^-0.5); LayerNorms 1 / 0.
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.positional_embedding, std=0.01)
        self.transformer = TextBlocks(cfg)
        self.ln_final = nn.LayerNorm(cfg.width, eps=cfg.norm_eps)
        self.text_projection = nn.Parameter(torch.empty(cfg.width, embed_dim))
        nn.init.normal_(self.text_projection, std=cfg.width**-0.5)
        self.grad_checkpointing = False

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.token_embedding(tokens) + self.positional_embedding[: tokens.shape[1]].to(
            self.token_embedding.weight.dtype
        )
        for blk in self.transformer.resblocks:
            if self.grad_checkpointing and self.training:
                x = checkpoint(blk, x, use_reentrant=False)
            else:
                x = blk(x)
        x = self.ln_final(x)
        # The end-of-text token has the largest id in the CLIP vocabulary: pool there.
        pooled = x[torch.arange(x.shape[0], device=x.device), tokens.argmax(dim=-1)]
        return pooled @ self.text_projection


# --------------------------------------------------------------------------- the CLIP model
class EvaCLIP(nn.Module):
    def __init__(self, spec: ModelSpec, image_size: int | None = None) -> None:
        super().__init__()
        self.spec = spec
        self.visual = EvaVisionTransformer(spec.vision, spec.embed_dim, image_size)
        self.text = TextTransformer(spec.text, spec.embed_dim)
        # Shape (1,), not OpenCLIP's 0-d: DeepSpeed's parameter broadcast views a bf16 tensor as
        # bytes (engine._broadcast_model), which a 0-d tensor cannot do. Same single element.
        self.logit_scale = nn.Parameter(torch.full((1,), LOGIT_SCALE_INIT))
        _flash_attn_func()  # resolve the attention kernel before any forward (and any compilation)

    def set_grad_checkpointing(self, enabled: bool = True) -> None:
        self.visual.grad_checkpointing = enabled
        self.text.grad_checkpointing = enabled

    def set_patch_dropout(self, prob: float) -> None:
        if not 0.0 <= prob < 1.0:
            raise ValueError(f"patch dropout must be in [0, 1), got {prob}")
        self.visual.patch_dropout = prob

    def forward(
        self, images: torch.Tensor, tokens: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """L2-normalised image and text features, and exp(logit_scale) (the trainer keeps the
        parameter in [0, ln 100] by clamping it after each optimizer step, as the official loop)."""
        image_features = F.normalize(self.visual(images), dim=-1)
        text_features = F.normalize(self.text(tokens), dim=-1)
        return image_features, text_features, self.logit_scale.exp()


def build_model(
    spec: ModelSpec, *, image_size: int | None = None, patch_dropout: float = 0.0, grad_ckpt: bool = False
) -> EvaCLIP:
    """The EVA-CLIP model of a profile. Build it under `torch.device("meta")` to count parameters
    or FLOPs without memory, or under `deepspeed.zero.Init` to partition it as it is built.
    `image_size` (default: the profile's) sizes the position embedding and the RoPE grid."""
    model = EvaCLIP(spec, image_size)
    model.set_patch_dropout(patch_dropout)
    model.set_grad_checkpointing(grad_ckpt)
    return model
