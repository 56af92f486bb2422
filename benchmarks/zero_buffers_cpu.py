"""What DeepSpeed really allocates for ZeRO-1 vs ZeRO-2: a census of live tensors on 2 CPU ranks.

Run (from the repo root, the train extra installed; prints one line per stage and checkpoint):

    TORCH_EXTENSIONS_DIR=$PWD/.torch_ext OMP_NUM_THREADS=1 CUDA_VISIBLE_DEVICES= \
      python -m torch.distributed.run --standalone --nproc_per_node=2 benchmarks/zero_buffers_cpu.py \
      --stage 1 [--reduce-bucket-size 100000]

One stage per process: DeepSpeed keeps an engine's buffers alive after the engine is dropped, so a
second engine in the same process would count the first one's too. A reduce bucket smaller than the
model tells a full-size gradient buffer (2 bytes/param whatever the bucket) from a bucket.

A CPU run has no `max_memory_allocated`, so this counts what the caching allocator would hold on a GPU:
every live tensor storage (gc census, each storage once), grouped by owner — the model's 16-bit
parameters, their `.grad`, the optimizer's fp32 partitions and states, and everything else
(DeepSpeed's gradient buckets and partitions) — right after `backward` of the last micro-batch and
after `step`. eva-clip-debug with the config evaplan renders (planner/deepspeed_config.py), bf16,
reduce_bucket_size as rendered; the planner's terms (planner/memory.py) are printed beside it.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def census(model, optimizer) -> dict[str, int]:  # type: ignore[no-untyped-def]
    import torch

    seen: set[int] = set()
    groups = {"params_16bit": 0, "param_grads": 0, "optimizer": 0, "other": 0}
    params = {p.untyped_storage().data_ptr() for p in model.parameters() if p.numel()}
    grads = {
        p.grad.untyped_storage().data_ptr() for p in model.parameters() if p.grad is not None and p.numel()
    }
    opt: set[int] = set()
    inner = getattr(optimizer, "optimizer", optimizer)
    for st in inner.state.values():
        for v in st.values():
            if torch.is_tensor(v) and v.numel():
                opt.add(v.untyped_storage().data_ptr())
    for g in inner.param_groups:
        for p in g["params"]:
            if p.numel():
                opt.add(p.untyped_storage().data_ptr())
    for obj in gc.get_objects():
        try:
            if not torch.is_tensor(obj) or obj.device.type != "cpu" or obj.is_meta:
                continue
            s = obj.untyped_storage()
        except Exception:  # some tensor subclasses refuse storage access
            continue
        ptr = s.data_ptr()
        if ptr == 0 or ptr in seen:
            continue
        seen.add(ptr)
        key = (
            "params_16bit"
            if ptr in params
            else "param_grads"
            if ptr in grads
            else "optimizer"
            if ptr in opt
            else "other"
        )
        groups[key] += s.nbytes()
    return groups


def main() -> int:
    import deepspeed
    import torch
    import torch.distributed as dist

    from evaclip.loss import clip_loss
    from evaclip.model import build_model
    from planner.deepspeed_config import deepspeed_config
    from planner.params import count_params
    from planner.profiles import load_model
    from planner.spec import ParallelPlan

    deepspeed.init_distributed()
    rank, world = dist.get_rank(), dist.get_world_size()
    ap = argparse.ArgumentParser()
    ap.add_argument("--stage", type=int, choices=(1, 2), required=True)
    ap.add_argument("--reduce-bucket-size", type=int, default=None)
    ap.add_argument("--grad-accum", type=int, default=2)
    args = ap.parse_args()
    spec = load_model("eva-clip-debug")
    psi = count_params(spec).total
    stage = args.stage
    plan = ParallelPlan(
        nodes=1,
        gpus_per_node=world,
        zero_stage=stage,
        micro_batch=4,
        grad_accum=args.grad_accum,
        grad_ckpt=False,
    )
    cfg = deepspeed_config(plan, grad_clip=5.0)
    cfg.pop("optimizer", None)
    if args.reduce_bucket_size:
        cfg["zero_optimization"]["reduce_bucket_size"] = args.reduce_bucket_size
        cfg["zero_optimization"]["allgather_bucket_size"] = args.reduce_bucket_size
    torch.manual_seed(0)
    model = build_model(spec, image_size=32)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    engine, optimizer, _, _ = deepspeed.initialize(model=model, optimizer=opt, config=cfg)
    # Two more census points where DeepSpeed's transient buffers live: in backward when the last
    # gradient (the patch embedding's, computed last) arrives — reduce buckets and the 16-bit
    # gradients are all there — and inside the wrapped torch optimizer's step, where the fp32
    # gradient partitions exist.
    seen_points: dict[str, dict[str, int]] = {}
    armed = {"on": False}
    first = engine.module.visual.patch_embed.proj.weight

    def grad_hook(g):  # type: ignore[no-untyped-def]
        if armed["on"]:
            seen_points["in backward"] = census(engine.module, optimizer)
        return g

    first.register_hook(grad_hook)
    inner = optimizer.optimizer if hasattr(optimizer, "optimizer") else optimizer
    inner_step = inner.step

    def wrapped_step(*a, **k):  # type: ignore[no-untyped-def]
        if armed["on"]:
            seen_points["in optimizer step"] = census(engine.module, optimizer)
        return inner_step(*a, **k)

    inner.step = wrapped_step
    img = torch.randn(4, 3, 32, 32, dtype=torch.bfloat16)
    tok = torch.randint(0, spec.text.vocab_size, (4, spec.text.context_length))
    gas = args.grad_accum
    for step in range(2):
        for micro in range(gas):
            last = step == 1 and micro == gas - 1
            armed["on"] = last
            feats = engine(img, tok)
            loss = clip_loss(*feats)
            engine.backward(loss)
            if last:
                after_backward = census(engine.module, optimizer)
            engine.step()
    after_step = census(engine.module, optimizer)
    if rank == 0:
        points = [("in backward", seen_points.get("in backward"))]
        points += [("after backward", after_backward)]
        points += [("in optimizer step", seen_points.get("in optimizer step")), ("after step", after_step)]
        for when, c in points:
            if c is None:
                print(f"ZeRO-{stage} {when}: not reached", flush=True)
                continue
            total = sum(c.values())
            parts = ", ".join(f"{k} {v / psi:.2f}" for k, v in c.items())
            print(
                f"ZeRO-{stage} {when}: {total / psi:.2f} bytes/param of Ψ={psi:,} ({parts}); "
                f"world {world}, reduce_bucket_size {cfg['zero_optimization'].get('reduce_bucket_size')}, "
                f"grad accum {gas}",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    raise SystemExit(main())
