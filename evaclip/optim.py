"""Optimizers and learning-rate schedule as EVA-CLIP trains (the published recipes: EVA-CLIP,
arXiv 2303.15389; EVA-CLIP-18B, arXiv 2402.04252 Tables 12-13; each model profile's `recipe`).

- Per-tower layer-decay parameter groups: the vision tower at `image_lr` with decay
  `image_layer_decay`, the text tower at `text_lr` with `text_layer_decay` (BEiT/EVA layer-wise lr
  decay: layer i of L gets lr · decay^(L + 1 − i); embeddings are layer 0, the final norm and head
  layer L + 1). No weight decay on 1-D tensors (biases, norms, q/v biases), position embeddings, the
  CLS token and the logit scale (EVA's `no_weight_decay` list). The logit scale trains with the text
  tower's top lr.
- LAMB (You et al. 2019, arXiv 1904.00962, Algorithm 2, with bias correction as timm's `Lamb`), or
  torch AdamW.
- Linear warm-up to each group's lr, then cosine decay to zero at `total_steps`.

Each group carries `base_lr` (its lr at the end of warm-up); `set_lr` writes `lr = base_lr · factor`.
"""

from __future__ import annotations

import math
import re
from typing import Any

import torch
from torch import nn

from evaclip.config import RunConfig

_NO_DECAY_NAMES = ("visual.pos_embed", "visual.cls_token", "text.positional_embedding", "logit_scale")


def _layer_id(name: str, vision_depth: int, text_layers: int) -> tuple[str, int, int]:
    """(tower, layer id, number of layers + 1) for a parameter name."""
    if name.startswith("visual."):
        m = re.match(r"visual\.blocks\.(\d+)\.", name)
        if m:
            return "vision", int(m.group(1)) + 1, vision_depth + 1
        if name.startswith(("visual.cls_token", "visual.pos_embed", "visual.patch_embed")):
            return "vision", 0, vision_depth + 1
        return "vision", vision_depth + 1, vision_depth + 1
    m = re.match(r"text\.transformer\.resblocks\.(\d+)\.", name)
    if m:
        return "text", int(m.group(1)) + 1, text_layers + 1
    if name.startswith(("text.token_embedding", "text.positional_embedding")):
        return "text", 0, text_layers + 1
    return "text", text_layers + 1, text_layers + 1  # ln_final, text_projection, logit_scale


def param_groups(model: nn.Module, run: RunConfig) -> list[dict[str, Any]]:
    """Parameter groups with layer-decayed `lr`/`base_lr` and `weight_decay`, one per
    (tower, layer, decay or not). Works on ZeRO-3-partitioned parameters (uses `ds_shape`)."""
    spec = run.model
    groups: dict[tuple[str, int, bool], dict[str, Any]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        tower, layer, top = _layer_id(name, spec.vision.depth, spec.text.layers)
        lr, decay = (
            (run.image_lr, run.image_layer_decay)
            if tower == "vision"
            else (run.text_lr, run.text_layer_decay)
        )
        shape = tuple(getattr(p, "ds_shape", p.shape))
        no_wd = len(shape) <= 1 or name.endswith(".bias") or name.startswith(_NO_DECAY_NAMES)
        key = (tower, layer, no_wd)
        if key not in groups:
            base_lr = lr * decay ** (top - layer)
            groups[key] = {
                "params": [],
                "names": [],
                "lr": base_lr,
                "base_lr": base_lr,
                "weight_decay": 0.0 if no_wd else run.weight_decay,
            }
        groups[key]["params"].append(p)
        groups[key]["names"].append(name)
    return [groups[k] for k in sorted(groups)]


def lr_factor(step: int, *, warmup_steps: int, total_steps: int) -> float:
    """Multiplier of base_lr for optimizer step `step` (0-based): linear warm-up, then cosine to 0."""
    if warmup_steps and step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(total_steps - warmup_steps, 1)
    progress = min(max(step - warmup_steps, 0) / span, 1.0)
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def set_lr(optimizer: torch.optim.Optimizer, factor: float) -> float:
    """Apply the schedule to every group; returns the largest lr set (for the metrics)."""
    top = 0.0
    for g in optimizer.param_groups:
        g["lr"] = g.get("base_lr", g["lr"]) * factor
        top = max(top, g["lr"])
    return top


class Lamb(torch.optim.Optimizer):
    """LAMB: Adam's direction, rescaled per tensor by the trust ratio ‖w‖ / ‖update‖."""

    def __init__(
        self,
        params: Any,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-6,
        weight_decay: float = 0.0,
    ) -> None:
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay})

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None or p.numel() == 0:
                    continue
                grad = p.grad.float()
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p, dtype=torch.float32)
                    state["exp_avg_sq"] = torch.zeros_like(p, dtype=torch.float32)
                state["step"] += 1
                m, v = state["exp_avg"], state["exp_avg_sq"]
                m.mul_(beta1).add_(grad, alpha=1 - beta1)
                v.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                m_hat = m / (1 - beta1 ** state["step"])
                v_hat = v / (1 - beta2 ** state["step"])
                update = m_hat / (v_hat.sqrt() + group["eps"])
                if group["weight_decay"]:
                    update.add_(p.float(), alpha=group["weight_decay"])
                w_norm, u_norm = p.float().norm(), update.norm()
                trust = torch.where((w_norm > 0) & (u_norm > 0), w_norm / u_norm, torch.ones_like(w_norm))
                p.add_((update * trust).to(p.dtype), alpha=-group["lr"])
        return loss


def build_optimizer(
    groups: list[dict[str, Any]], run: RunConfig, *, fused: bool = False
) -> torch.optim.Optimizer:
    """LAMB, or AdamW — with `fused` (a GPU), PyTorch's fused AdamW kernel: one kernel launch per
    parameter group and dtype instead of several per tensor (torch.optim.AdamW `fused=True`)."""
    clean = [{k: v for k, v in g.items() if k != "names"} for g in groups]
    if run.optimizer == "lamb":
        return Lamb(clean, lr=run.image_lr, betas=run.betas, eps=run.eps, weight_decay=run.weight_decay)
    return torch.optim.AdamW(
        clean,
        lr=run.image_lr,
        betas=run.betas,
        eps=run.eps,
        weight_decay=run.weight_decay,
        **({"fused": True} if fused else {}),
    )
