"""Train EVA-CLIP with DeepSpeed ZeRO from the config evaplan renders.

    torchrun --nproc_per_node N -m evaclip.train --ds-config deepspeed.json --run-config run.json
    evaplan train --ds-config deepspeed.json --run-config run.json [--nproc-per-node N]

The DeepSpeed config is used as written (planner.deepspeed_config renders it); the run config is an
evaclip.config.RunConfig (model profile embedded). What happens:

- model: evaclip.model built from the profile, under `deepspeed.zero.Init` for ZeRO-3 (parameters
  partitioned as they are created), with patch dropout and activation checkpointing of every block
  (`grad_ckpt`); bf16 / fp16 as the DeepSpeed config says; initialised from released weights when
  the run config's `init_from` (or --init-from / --init-vision-from / --init-text-from) says so
  (evaclip.pretrained: rank 0 reads, ZeRO-3 parameters are written one at a time);
- speed: every block compiled with torch.compile on a GPU (`compile`, evaclip.speed; eager if
  compilation fails); the attention kernel in use is reported; the loop reads values from the
  device only on the steps it logs (`log_every_steps`), and agrees on SIGTERM / time-based
  checkpoints through a CPU (gloo) group, so the host never waits for the GPU in between;
- optimizer: LAMB or AdamW (fused on a GPU) with per-tower layer-decay groups (evaclip.optim); with
  optimizer offload the DeepSpeed config carries an AdamW block and DeepSpeed builds
  DeepSpeedCPUAdam on our groups; after every optimizer step the logit scale is clamped in place to
  [0, ln 100] (evaclip.logit_scale, as the official loop);
- schedule: linear warm-up + cosine, set on the groups before every optimizer step; gradient
  clipping by DeepSpeed (`gradient_clipping`);
- data: evaclip.data (synthetic, or WebDataset shards from a folder or s3://);
- loss: evaclip.loss.clip_loss (local loss, all-gather with gradient as the run config says);
- metrics: JSON lines at RunConfig.metrics_path() — keys documented in evaclip/metrics.py — and a
  progress line on stdout from rank 0;
- checkpoints (`checkpoint.dir`, relative to `output_dir` unless absolute): every
  `checkpoint.every_steps` / `every_s`, at the end, and when SIGTERM arrives
  (Kubernetes preemption: the ranks agree on the step, save, and exit 143 within the grace period);
  resume from the newest good local or S3 checkpoint (evaclip.checkpoint).

Randomness (patch dropout, drop path) is reseeded from (seed, step, rank) every step and synthetic
data is a function of the sample index, so a resumed run repeats an uninterrupted one.
Exit codes: 0 done, 2 bad input (one `error:` line), 143 preempted after checkpointing.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any

from evaclip.config import RunConfig, empty_init_path_check
from evaclip.rank_launcher import report_rank_error
from planner.errors import EvaplanError

EXIT_PREEMPTED = 143  # 128 + SIGTERM, what Kubernetes reports for a terminated container


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m evaclip.train", description=__doc__.split("\n")[0])
    p.add_argument("--ds-config", required=True, help="DeepSpeed config JSON (rendered by evaplan)")
    p.add_argument("--run-config", required=True, help="evaclip RunConfig JSON")
    p.add_argument(
        "--local_rank", "--local-rank", type=int, default=None, help="set by the deepspeed launcher"
    )
    init = p.add_argument_group("start from released weights (override the run config's init_from)")
    init.add_argument("--init-from", metavar="PATH|s3://…", help="whole model, official EVA-CLIP layout")
    init.add_argument("--init-vision-from", metavar="PATH|s3://…", help="vision tower (EVA-CLIP or EVA MIM)")
    init.add_argument("--init-text-from", metavar="PATH|s3://…", help="text tower (EVA-CLIP or OpenCLIP)")
    init.add_argument(
        "--init-strict",
        choices=("true", "false"),
        default=None,
        help="stop on missing/unexpected/reshaped keys (default true)",
    )
    p.add_argument("--compile", choices=("auto", "on", "off"), default=None, help="torch.compile the blocks")
    return p.parse_args(argv)


def apply_overrides(run: RunConfig, args: argparse.Namespace) -> RunConfig:
    """The run config with the command line's --init-* / --compile flags applied (validated)."""
    from pydantic import ValidationError

    for flag in ("--init-from", "--init-vision-from", "--init-text-from"):
        value = getattr(args, flag.removeprefix("--").replace("-", "_"))
        if value is not None:
            empty_init_path_check(flag, value)
    if args.init_from and (args.init_vision_from or args.init_text_from):
        raise EvaplanError(
            "--init-from loads both towers", hint="drop --init-vision-from / --init-text-from, or --init-from"
        )
    update: dict[str, Any] = {}
    init = run.init_from.model_dump()
    flags = {"model": args.init_from, "vision": args.init_vision_from, "text": args.init_text_from}
    if any(flags.values()):
        init.update(model=None, vision=None, text=None)  # the command line names the whole set
        init.update({k: v for k, v in flags.items() if v})
    if args.init_strict is not None:
        init["strict"] = args.init_strict == "true"
    if init != run.init_from.model_dump():
        try:
            update["init_from"] = type(run.init_from).model_validate(init)
        except ValidationError as e:
            msg = e.errors()[0]["msg"].removeprefix("Value error, ")
            raise EvaplanError(f"--init-*: {msg}", hint="see --help") from None
    if args.compile is not None:
        update["compile"] = args.compile
    return run.model_copy(update=update) if update else run


def _read_json(path: str, what: str) -> dict[str, Any]:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise EvaplanError(
            f"{what} {path} does not exist", hint="render the bundle first (evaplan launch --dry-run)"
        ) from None
    except json.JSONDecodeError as e:
        raise EvaplanError(f"{what} {path} is not valid JSON: {e}", hint="fix or re-render it") from None
    except UnicodeDecodeError:
        raise EvaplanError(f"{what} {path} is not UTF-8 text", hint="fix or re-render it") from None
    except RecursionError:  # thousands of nested brackets
        raise EvaplanError(f"{what} {path} nests too deeply to be a config", hint="re-render it") from None
    except OSError as e:  # a folder, unreadable
        raise EvaplanError(f"cannot read {what} {path}: {e.strerror or e}", hint="check the path") from None
    if not isinstance(data, dict):
        raise EvaplanError(f"{what} {path} must hold a JSON object", hint="fix or re-render it")
    return data


def load_run_config(run_path: str) -> RunConfig:
    from pydantic import ValidationError

    from planner.profiles import format_validation_error

    raw = _read_json(run_path, "run config")
    try:
        return RunConfig.model_validate(raw)
    except ValidationError as e:
        raise EvaplanError(format_validation_error(run_path, e)) from None


def load_configs(ds_path: str, run_path: str) -> tuple[dict[str, Any], RunConfig]:
    ds_cfg = _read_json(ds_path, "DeepSpeed config")
    for key in ("train_micro_batch_size_per_gpu", "gradient_accumulation_steps", "train_batch_size"):
        if not isinstance(ds_cfg.get(key), int) or ds_cfg[key] <= 0:
            raise EvaplanError(
                f"DeepSpeed config {ds_path} lacks a positive integer {key}", hint="re-render it with evaplan"
            )
    run = load_run_config(run_path)
    clip = float(ds_cfg.get("gradient_clipping", 0.0) or 0.0)
    if run.grad_clip is not None and clip != run.grad_clip:
        # DeepSpeed clips (gradient_clipping); the run config's value is informational here.
        print(
            f"[evaclip] warning: run config grad_clip {run.grad_clip} differs from the DeepSpeed config's "
            f"gradient_clipping {clip}; DeepSpeed's value is used",
            file=sys.stderr,
            flush=True,
        )
    if "optimizer" in ds_cfg and run.optimizer != "adamw":
        raise EvaplanError(
            f"the DeepSpeed config builds its own optimizer ({ds_cfg['optimizer'].get('type')}) but the run asks for {run.optimizer}",
            hint="use optimizer adamw with ZeRO-Offload (DeepSpeed has no CPU LAMB)",
        )
    return ds_cfg, run


def _ensure_single_process_env() -> None:
    """`python -m evaclip.train` without a launcher: a world of one on a free local port."""
    if "RANK" in os.environ:
        return
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    os.environ.update(
        RANK="0",
        LOCAL_RANK="0",
        WORLD_SIZE="1",
        LOCAL_WORLD_SIZE="1",
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )


class _Preemption:
    """Remembers SIGTERM; the loop checks it after each optimizer step."""

    def __init__(self) -> None:
        self.requested = False
        signal.signal(signal.SIGTERM, self._handler)

    def _handler(self, signum: int, frame: Any) -> None:
        self.requested = True


def _peak_mem(torch: Any, device: Any) -> tuple[int, str]:
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device)), "device"
    # ru_maxrss is KiB on Linux.
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024, "host_rss"


def _comm_totals(logger: Any) -> dict[str, tuple[int, int]]:
    """{collective: (bytes, calls)} logged so far by DeepSpeed's comms logger on this rank."""
    out: dict[str, tuple[int, int]] = {}
    for name, sizes in logger.comms_dict.items():
        out[name] = (sum(int(size) * v[0] for size, v in sizes.items()), sum(v[0] for v in sizes.values()))
    return out


def train(ds_cfg: dict[str, Any], run: RunConfig) -> int:
    import deepspeed
    import deepspeed.comm.comm as ds_comm
    import torch
    import torch.distributed as dist

    from evaclip import data as evdata
    from evaclip.checkpoint import Checkpointer
    from evaclip.cpu_precision import cpu_precision_unsupported
    from evaclip.flops import train_flops_per_sample
    from evaclip.logit_scale import clamp_logit_scale
    from evaclip.loss import clip_loss
    from evaclip.metrics import MetricsWriter, progress_line
    from evaclip.model import build_model, last_attention_backend
    from evaclip.optim import build_optimizer, lr_factor, param_groups, set_lr
    from evaclip.pretrained import load_pretrained
    from evaclip.speed import compile_blocks, should_compile, tower_attention_kernels

    _ensure_single_process_env()
    deepspeed.init_distributed()
    rank, world = dist.get_rank(), dist.get_world_size()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    mb, gas = ds_cfg["train_micro_batch_size_per_gpu"], ds_cfg["gradient_accumulation_steps"]
    if ds_cfg["train_batch_size"] != mb * gas * world:
        raise EvaplanError(
            f"train_batch_size {ds_cfg['train_batch_size']} != micro batch {mb} × grad accum {gas} × world size {world}",
            hint="launch with the number of GPUs the plan was made for, or re-plan",
        )
    zero_stage = int(ds_cfg.get("zero_optimization", {}).get("stage", 0))
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
    dtype, precision = torch.float32, "fp32"
    if ds_cfg.get("bf16", {}).get("enabled"):
        dtype, precision = torch.bfloat16, "bf16"
    elif ds_cfg.get("fp16", {}).get("enabled"):
        dtype, precision = torch.float16, "fp16"
    unsupported = cpu_precision_unsupported(precision) if device.type == "cpu" else None
    if unsupported:
        raise EvaplanError(
            f"cannot train in {precision} here: {unsupported}",
            hint="re-render the plan with --precision bf16 to train on this CPU",
        )
    spec = run.model

    torch.manual_seed(run.seed)
    with deepspeed.zero.Init(config_dict_or_path=ds_cfg, enabled=zero_stage == 3):
        model = build_model(
            spec, image_size=run.image_size, patch_dropout=run.patch_dropout, grad_ckpt=run.grad_ckpt
        )
    out_dir = Path(run.output_dir)
    if run.init_from.any:
        load_pretrained(
            model,
            spec,
            model_uri=run.init_from.model,
            vision_uri=run.init_from.vision,
            text_uri=run.init_from.text,
            strict=run.init_from.strict,
            scratch=out_dir / ".init",
            log=(lambda line: print(f"[evaclip] {line}", flush=True)) if rank == 0 else None,
        )
    compile_state = None
    if should_compile(run.compile, device, zero_stage):
        compile_state = compile_blocks(
            model, warn=lambda line: print(f"[evaclip] warning: {line}", file=sys.stderr, flush=True)
        )
    kernels = tower_attention_kernels(spec, run.image_size, mb, dtype, device)
    groups = param_groups(model, run)
    client_optimizer = (
        None if "optimizer" in ds_cfg else build_optimizer(groups, run, fused=device.type == "cuda")
    )
    model_parameters = [{k: v for k, v in g.items() if k != "names"} for g in groups]
    engine, _, _, _ = deepspeed.initialize(
        model=model,
        optimizer=client_optimizer,
        model_parameters=model_parameters if client_optimizer is None else None,
        config=ds_cfg,
    )
    optimizer = engine.optimizer
    logit_scale = engine.module.logit_scale
    # Flags the ranks must agree on (SIGTERM, time-based checkpoint) go through a CPU group, so the
    # agreement costs no device synchronisation (with gloo the default group already is one).
    control_group = None if dist.get_backend() == "gloo" else dist.new_group(backend="gloo")

    ckpt_dir = Path(run.checkpoint.dir)
    if not ckpt_dir.is_absolute():
        ckpt_dir = out_dir / ckpt_dir
    checkpointer = Checkpointer(ckpt_dir, s3_uri=run.checkpoint.s3_uri, keep=run.checkpoint.keep)
    start_step, resumed_from = 0, None
    if run.checkpoint.resume:
        loaded = checkpointer.load_latest(engine)
        if loaded is not None:
            resumed_from, state = loaded
            start_step = int(state.get("step", 0))
            if rank == 0:
                print(f"[evaclip] resumed from {resumed_from} at step {start_step}", flush=True)

    if run.data.kind == "synthetic":
        pairs = evdata.SyntheticPairs(
            image_size=run.image_size,
            context_length=spec.text.context_length,
            classes=run.data.synthetic_classes,
            seed=run.data.seed,
        )
        batches = evdata.synthetic_batches(
            pairs, micro_batch=mb, rank=rank, world_size=world, start_micro_step=start_step * gas
        )
    else:
        stream = evdata.ShardStream(
            run.data.url or "",
            image_size=run.image_size,
            context_length=spec.text.context_length,
            rank=rank,
            world_size=world,
            seed=run.data.seed,
            skip_samples=start_step * gas * mb,
        )
        batches = iter(evdata.shard_batches(stream, micro_batch=mb, num_workers=run.data.num_workers))

    global_batch = mb * gas * world
    flops_per_sample = train_flops_per_sample(spec, run.image_size, run.patch_dropout)
    peak_tflops = run.hardware.bf16_dense_tflops.value if run.hardware else None
    metrics = MetricsWriter(run.metrics_path(), enabled=rank == 0)
    comms_on = bool(ds_cfg.get("comms_logger", {}).get("enabled"))
    preempt = _Preemption()
    metrics.write(
        "start",
        job_name=run.job_name,
        model=spec.name,
        hardware=run.hardware.name if run.hardware else None,
        world_size=world,
        micro_batch=mb,
        grad_accum=gas,
        global_batch=global_batch,
        zero_stage=zero_stage,
        precision=precision,
        total_steps=run.total_steps,
        image_size=run.image_size,
        patch_dropout=run.patch_dropout,
        grad_ckpt=run.grad_ckpt,
        optimizer=run.optimizer,
        start_step=start_step,
        resumed_from=resumed_from,
        flops_per_sample=flops_per_sample,
        peak_tflops=peak_tflops,
        device=device.type,
        time=time.time(),
        compile=compile_state.describe() if compile_state else "off",
        attention_kernels=kernels,
        init_from=run.init_from.model_dump() if run.init_from.any else None,
    )
    if rank == 0:
        print(
            f"[evaclip] attention: vision {kernels['vision']}, text {kernels['text']}; "
            f"compile: {compile_state.describe() if compile_state else 'off'}",
            flush=True,
        )

    def save(step: int, reason: str) -> None:
        tag, secs, uploaded = checkpointer.save(
            engine, step, {"step": step, "samples_seen": step * global_batch}
        )
        metrics.write(
            "checkpoint", step=step, tag=tag, seconds=round(secs, 3), uploaded=uploaded, reason=reason
        )
        if rank == 0:
            print(
                f"[evaclip] checkpoint {tag} ({reason}) in {secs:.1f} s{' + S3' if uploaded else ''}",
                flush=True,
            )

    t_start = last_ckpt_time = last_log_time = time.time()
    step = last_log_step = start_step
    last_saved = start_step if resumed_from else None
    engine.train()
    status = "completed"
    while step < run.total_steps:
        torch.manual_seed(run.seed + 1_000_003 * (step + 1) + rank)  # patch dropout / drop path
        lr = set_lr(optimizer, lr_factor(step, warmup_steps=run.warmup_steps, total_steps=run.total_steps))
        comm_before = _comm_totals(ds_comm.comms_logger) if comms_on else {}
        loss_sum = torch.zeros((), dtype=torch.float32, device=device)  # stays on the device
        for _ in range(gas):
            images, tokens = next(batches)
            img, txt, scale = engine(
                images.to(device, dtype, non_blocking=True), tokens.to(device, non_blocking=True)
            )
            loss = clip_loss(
                img, txt, scale, local_loss=run.local_loss, gather_with_grad=run.gather_with_grad
            )
            engine.backward(loss)
            engine.step()
            loss_sum += loss.detach().float()
        clamp_logit_scale(logit_scale, optimizer)  # after the optimizer step, as the official loop
        step += 1
        # Every rank agrees on preemption and on a time-based checkpoint (CPU flags, no device sync).
        due_by_time = (
            run.checkpoint.every_s is not None and time.time() - last_ckpt_time >= run.checkpoint.every_s
        )
        flags = torch.tensor([float(preempt.requested), float(due_by_time)], dtype=torch.float64)
        dist.all_reduce(flags, op=dist.ReduceOp.MAX, group=control_group)
        stop, due_by_time = bool(flags[0]), bool(flags[1])
        comm_after = _comm_totals(ds_comm.comms_logger) if comms_on else {}
        if step % run.log_every_steps == 0 or step == run.total_steps or stop:
            # The one place the loop waits for the device: the loss of this step, summed over ranks
            # (outside deepspeed.comm, so the comms logger does not count it).
            dist.all_reduce(loss_sum)
            mean_loss = float(loss_sum) / gas / world
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            now = time.time()
            step_time = (now - last_log_time) / (step - last_log_step)  # mean since the last record
            last_log_time, last_log_step = now, step
            samples_per_s = global_batch / step_time
            tflops = flops_per_sample * samples_per_s / world / 1e12
            peak, kind = _peak_mem(torch, device)
            rec: dict[str, Any] = {
                "step": step,
                "samples_seen": step * global_batch,
                "time_s": round(now - t_start, 4),
                "step_time_s": round(step_time, 6),
                "samples_per_s": samples_per_s,
                "loss": mean_loss,
                "lr": lr,
                "tflops_per_gpu": tflops,
                "mfu": tflops / peak_tflops if peak_tflops else None,
                "peak_mem_bytes": peak,
                "peak_mem_kind": kind,
                "world_size": world,
                "micro_batch": mb,
                "grad_accum": gas,
                "zero_stage": zero_stage,
                "attention": last_attention_backend(),
                "logit_scale": float(scale.detach().float().reshape(-1)[0]),
                "compiled": bool(compile_state and compile_state.active),
            }
            if comms_on:
                rec["comm_bytes"] = {
                    k: v[0] - comm_before.get(k, (0, 0))[0]
                    for k, v in comm_after.items()
                    if v[0] - comm_before.get(k, (0, 0))[0] or v[1] - comm_before.get(k, (0, 0))[1]
                }
                rec["comm_calls"] = {
                    k: v[1] - comm_before.get(k, (0, 0))[1]
                    for k, v in comm_after.items()
                    if v[1] - comm_before.get(k, (0, 0))[1]
                }
            metrics.write("step", **rec)
            if rank == 0:
                print(progress_line(rec, run.total_steps), flush=True)
        every = run.checkpoint.every_steps
        if stop:
            save(step, "sigterm")
            status = "preempted"
            break
        if (every and step % every == 0) or due_by_time:
            save(step, "periodic")
            last_saved, last_ckpt_time = step, time.time()
            # The next record's step time measures training steps, not the checkpoint.
            last_log_time, last_log_step = last_ckpt_time, step
    if status == "completed" and last_saved != step:
        save(step, "final")
    metrics.write("end", step=step, status=status, time_s=round(time.time() - t_start, 3))
    metrics.close()
    if comms_on:
        ds_comm.log_summary()
    dist.barrier()
    return EXIT_PREEMPTED if status == "preempted" else 0


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    try:
        ds_cfg, run = load_configs(args.ds_config, args.run_config)
        return train(ds_cfg, apply_overrides(run, args))
    except EvaplanError as e:
        report_rank_error(e.line())  # under evaplan's rank launcher, it prints the line once
        return e.exit_code


if __name__ == "__main__":
    sys.exit(main())
