"""CLIP contrastive loss across data-parallel ranks (OpenCLIP `ClipLoss`, as EVA-CLIP trains it).

Every rank gathers the image and text features of all ranks. With `local_loss` a rank scores only
its own b images against all B texts (and its b texts against all B images): two b × B logit
matrices instead of B × B (4 bytes × B² is ≈ 47 GB per matrix at B = 108k: never do that;
docs/planner-model.md, "CLIP loss, buffers, runtime").

Gradients, exactly as the official `gather_features` / `ClipLoss` (baaivision/EVA
EVA-CLIP/rei/eva_clip/loss.py, the torch.distributed branch):
- `gather_with_grad`: the gather is differentiable (`torch.distributed.nn.all_gather`, whose backward
  is a reduce-scatter that sends each rank the summed gradient of its own features), so every rank's
  loss reaches every rank's features;
- not `gather_with_grad`, not `local_loss`: the gathered copies are constants except the rank's own
  slot, which is replaced by its local features (the official "ensure grads for local rank");
- not `gather_with_grad`, `local_loss`: the gathered copies are all constants; the gradient flows
  only through the local features on the left of `img @ all_txt.T` and `txt @ all_img.T` (the
  official code does not put the local slot back in this case).
The feature gathers go through torch.distributed directly, not deepspeed.comm, so DeepSpeed's comms
logger counts only ZeRO's own collectives.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F


def _world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class _AllGatherWithGrad(torch.autograd.Function):
    """All-gather along dim 0 whose backward hands each rank the summed gradient of its own slice
    (a reduce-scatter; gloo has none, so there it is an all-reduce and a slice)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        world = dist.get_world_size()
        out = x.new_empty((world * x.shape[0], *x.shape[1:]))
        dist.all_gather_into_tensor(out, x.contiguous())
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        rank, world = dist.get_rank(), dist.get_world_size()
        grad = grad.contiguous()
        b = grad.shape[0] // world
        if dist.get_backend() == "gloo":
            dist.all_reduce(grad)
            return grad[rank * b : (rank + 1) * b]
        out = grad.new_empty((b, *grad.shape[1:]))
        dist.reduce_scatter_tensor(out, grad)
        return out


def gather_features(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    *,
    gather_with_grad: bool,
    local_loss: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """All ranks' features, concatenated in rank order: (B, d) each (gradient paths: module doc)."""
    rank, world = _world()
    if world == 1:
        return image_features, text_features
    if gather_with_grad:
        return _AllGatherWithGrad.apply(image_features), _AllGatherWithGrad.apply(text_features)
    images = [torch.empty_like(image_features) for _ in range(world)]
    texts = [torch.empty_like(text_features) for _ in range(world)]
    dist.all_gather(images, image_features.detach().contiguous())
    dist.all_gather(texts, text_features.detach().contiguous())
    if not local_loss:
        images[rank], texts[rank] = image_features, text_features  # keep the local gradient path
    return torch.cat(images, dim=0), torch.cat(texts, dim=0)


def clip_loss(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    logit_scale: torch.Tensor,
    *,
    local_loss: bool = True,
    gather_with_grad: bool = True,
) -> torch.Tensor:
    """Symmetric InfoNCE: mean of image→text and text→image cross-entropy; matching pairs share an
    index. Logits in fp32 (softmax over up to B columns in bf16 loses the small differences)."""
    rank, _ = _world()
    img, txt = image_features.float(), text_features.float()
    scale = logit_scale.float()
    all_img, all_txt = gather_features(img, txt, gather_with_grad=gather_with_grad, local_loss=local_loss)
    b = img.shape[0]
    if local_loss:
        logits_per_image = scale * img @ all_txt.T  # (b, B)
        logits_per_text = scale * txt @ all_img.T  # (b, B)
        labels = torch.arange(b, device=img.device) + rank * b
    else:
        logits_per_image = scale * all_img @ all_txt.T  # (B, B)
        logits_per_text = logits_per_image.T
        labels = torch.arange(all_img.shape[0], device=img.device)
    return (F.cross_entropy(logits_per_image, labels) + F.cross_entropy(logits_per_text, labels)) / 2
