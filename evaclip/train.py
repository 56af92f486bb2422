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
This module reads the command line and the configs; the loop is evaclip.trainer.Trainer.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from evaclip.config import RunConfig, empty_init_path_check
from evaclip.rank_launcher import EXIT_PREEMPTED, report_rank_error
from planner.errors import EvaplanError

__all__ = ["EXIT_PREEMPTED", "apply_overrides", "load_configs", "load_run_config", "main", "train"]


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


def train(ds_cfg: dict[str, Any], run: RunConfig) -> int:
    """Run the loop (evaclip.trainer.Trainer); returns the exit code. main() shuts the process groups
    down afterwards, on every way out."""
    # torch and DeepSpeed load once the configs are good
    from evaclip.trainer import Trainer

    trainer = Trainer(ds_cfg, run)
    try:
        return trainer.train()
    finally:
        trainer.release()


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    try:
        ds_cfg, run = load_configs(args.ds_config, args.run_config)
        return train(ds_cfg, apply_overrides(run, args))
    except EvaplanError as e:
        report_rank_error(e.line())  # under evaplan's rank launcher, it prints the line once
        return e.exit_code
    finally:
        # Here, after the error (and its traceback, which holds the trainer) is let go, so the engine
        # and the groups its parameters hold are freed now, not at interpreter exit.
        _shutdown_distributed()


def _shutdown_distributed() -> None:
    """evaclip.trainer.shutdown_distributed where the trainer's modules were loaded (not after a bad
    config, which exits before torch is imported)."""
    trainer = sys.modules.get("evaclip.trainer")
    if trainer is not None:
        trainer.shutdown_distributed()


if __name__ == "__main__":
    sys.exit(main())
