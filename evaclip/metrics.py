"""Training metrics as JSON lines (RunConfig.metrics_path()), read back by `evaplan status` and
`evaplan calibrate`. The keys are a contract: add keys, never rename or remove them.

Every line is one JSON object with an `event`:

`{"event": "start", ...}` — written by rank 0 when a process starts (again after each resume):
    job_name, model (profile name), hardware (profile name or null), world_size, micro_batch,
    grad_accum, global_batch, zero_stage, precision, total_steps, image_size, patch_dropout,
    grad_ckpt, optimizer, start_step (0, or the step resumed from), resumed_from (checkpoint tag or
    null), flops_per_sample (model FLOPs of one training sample = 3 × forward, FlopCounterMode on
    the real model; recompute not counted, as MFU conventions require), peak_tflops (hardware bf16
    dense peak per GPU or null), device ("cuda", "cpu", ...), time (UNIX seconds), compile ("off",
    "regional (N blocks)"), attention_kernels ({"vision": kernel, "text": kernel}: "flash-attn",
    "flash-attn-rocm", "sdpa-flash", "sdpa-mem-efficient", "sdpa-cudnn", "sdpa-math", "sdpa-cpu"),
    init_from (the run config's init_from, or null).

`{"event": "step", ...}` — one per logged optimizer step (every `log_every_steps`):
    step (optimizer steps done, 1-based), samples_seen (global samples trained on so far),
    time_s (seconds since this process started training), step_time_s (mean wall time of the
    optimizer steps since the previous record, checkpoints excluded: the loop waits for the device
    only when it writes a record), samples_per_s (global samples per second over those steps), loss (global
    mean CLIP loss of the step), lr (largest group lr of the step), tflops_per_gpu (achieved model
    TFLOP/s per GPU), mfu (tflops_per_gpu / peak_tflops, null without a hardware profile),
    peak_mem_bytes (peak device memory allocated on rank 0; on CPU the process's peak RSS),
    peak_mem_kind ("device" | "host_rss"), world_size, micro_batch, grad_accum, zero_stage,
    attention ("flash" | "sdpa": the kernel the last attention call used), logit_scale
    (exp of the logit-scale parameter in the step's forward: the softmax temperature's inverse,
    at most 100), compiled (bool: compiled blocks in use), and —
    with the comms logger on — comm_bytes: {collective name: bytes} and comm_calls: {name: count}
    issued through deepspeed.comm on rank 0 during this optimizer step (bytes as DeepSpeed's comms
    logger counts a message: the tensor argument of the call, i.e. the per-rank input of an
    all-gather / the full buffer of an all-reduce or reduce-scatter).

`{"event": "checkpoint", ...}` — step, tag, seconds, uploaded (bool), reason ("periodic" |
    "sigterm" | "final").
`{"event": "end", ...}` — step, status ("completed" | "preempted"), time_s.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

START_KEYS = (
    "job_name",
    "model",
    "hardware",
    "world_size",
    "micro_batch",
    "grad_accum",
    "global_batch",
    "zero_stage",
    "precision",
    "total_steps",
    "image_size",
    "patch_dropout",
    "grad_ckpt",
    "optimizer",
    "start_step",
    "resumed_from",
    "flops_per_sample",
    "peak_tflops",
    "device",
    "time",
    "compile",
    "attention_kernels",
    "init_from",
)
STEP_KEYS = (
    "step",
    "samples_seen",
    "time_s",
    "step_time_s",
    "samples_per_s",
    "loss",
    "lr",
    "tflops_per_gpu",
    "mfu",
    "peak_mem_bytes",
    "peak_mem_kind",
    "world_size",
    "micro_batch",
    "grad_accum",
    "zero_stage",
    "attention",
    "logit_scale",
    "compiled",
)


class MetricsWriter:
    """Appends JSON lines; only the writing rank (rank 0) opens the file."""

    def __init__(self, path: Path, *, enabled: bool) -> None:
        self.path = path
        self.enabled = enabled
        if enabled:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = open(path, "a", encoding="utf-8")

    def write(self, event: str, **fields: Any) -> None:
        if not self.enabled:
            return
        self._fh.write(json.dumps({"event": event, **fields}, allow_nan=False, default=str) + "\n")
        self._fh.flush()
        os.fsync(self._fh.fileno())  # a preempted pod must not lose the last lines

    def close(self) -> None:
        if self.enabled:
            self._fh.close()


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """All records of a metrics file; a torn last line (a process killed mid-write) is skipped."""
    out = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


def progress_line(rec: dict[str, Any], total_steps: int) -> str:
    """The line a person reads: step, loss, lr, throughput, MFU, memory."""
    mfu = f"{rec['mfu'] * 100:5.1f}%" if rec.get("mfu") is not None else "  n/a"
    return (
        f"step {rec['step']:>6}/{total_steps} | loss {rec['loss']:.4f} | lr {rec['lr']:.3e} | "
        f"{rec['samples_per_s']:9.1f} samples/s | {rec['tflops_per_gpu']:7.2f} TFLOP/s/GPU | MFU {mfu} | "
        f"peak mem {rec['peak_mem_bytes'] / 2**30:6.2f} GiB | {rec['step_time_s']:.3f} s/step | "
        f"{time.strftime('%H:%M:%S')}"
    )
