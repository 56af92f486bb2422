"""The training loop of `python -m evaclip.train` (what it does: evaclip/train.py's docstring).

`Trainer` has the shape of torchtitan's `Trainer` (torchtitan/train.py): `__init__` builds the
distributed world, engine, data and metrics; `train_step` runs one optimizer step; `train` is the
short loop that calls it and hands off to logging, checkpointing and signal handling; `state_dict`
/ `load_state_dict` hold what a checkpoint saves besides the DeepSpeed engine. There is no
evaluation: the run config defines none.
"""

from __future__ import annotations

import gc
import os
import resource
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import deepspeed
import deepspeed.comm.comm as ds_comm
import torch
import torch.distributed as dist

from evaclip import data as evdata
from evaclip.checkpoint import Checkpointer
from evaclip.config import RunConfig
from evaclip.cpu_precision import cpu_precision_unsupported
from evaclip.flops import train_flops_per_sample
from evaclip.logit_scale import clamp_logit_scale
from evaclip.loss import clip_loss
from evaclip.metrics import MetricsWriter, progress_line
from evaclip.model import build_model, last_attention_backend
from evaclip.optim import build_optimizer, lr_factor, param_groups, set_lr
from evaclip.pretrained import load_pretrained
from evaclip.rank_launcher import EXIT_PREEMPTED
from evaclip.speed import compile_blocks, should_compile, tower_attention_kernels
from evaclip.world import ensure_single_process_env
from planner.errors import EvaplanError

CommTotals = dict[str, tuple[int, int]]


def _peak_mem(device: torch.device) -> tuple[int, str]:
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device)), "device"
    # ru_maxrss is KiB on Linux.
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024, "host_rss"


def _comm_totals(logger: Any) -> CommTotals:
    """{collective: (bytes, calls)} logged so far by DeepSpeed's comms logger on this rank."""
    out: CommTotals = {}
    for name, sizes in logger.comms_dict.items():
        out[name] = (sum(int(size) * v[0] for size, v in sizes.items()), sum(v[0] for v in sizes.values()))
    return out


def _comm_delta(before: CommTotals, after: CommTotals) -> dict[str, dict[str, int]]:
    """The step's comm_bytes / comm_calls records: what the comms logger counted between two totals."""
    zero = (0, 0)
    return {
        "comm_bytes": {
            k: v[0] - before.get(k, zero)[0]
            for k, v in after.items()
            if v[0] - before.get(k, zero)[0] or v[1] - before.get(k, zero)[1]
        },
        "comm_calls": {
            k: v[1] - before.get(k, zero)[1] for k, v in after.items() if v[1] - before.get(k, zero)[1]
        },
    }


# Set by evaplan's local supervisor when the job has a budget (launcher/backends/local_supervisor.py
# STOP_AT_ENV): the epoch second at which the ranks checkpoint and exit as on SIGTERM, so the budget
# holds even when every process above the ranks was killed.
STOP_AT_ENV = "EVACLIP_STOP_AT_EPOCH_S"


def stop_at_from_env(environ: Any = os.environ) -> float | None:
    """The ranks' own stop time, or None without one (or with a value that is not a finite number)."""
    raw = environ.get(STOP_AT_ENV)
    try:
        at = float(raw) if raw else None
    except ValueError:
        return None
    return at if at is not None and at == at and at != float("inf") else None


def shutdown_distributed() -> None:
    """Free the run's process groups while the interpreter is whole. Left to interpreter exit, a gloo
    group's threads can be torn down still joinable and the rank aborts ("terminate called without an
    active exception", SIGABRT) after a run that completed or stopped with its one error line: 6 of 18
    two-rank runs of tests/evaclip/test_train_cli.py's failing load did here. PyTorch asks for
    destroy_process_group() before exit (https://pytorch.org/docs/stable/distributed.html#shutdown),
    but that only drops c10d's own references: under ZeRO-3 every parameter keeps its
    `ds_process_group`, and DeepSpeed keeps the top module (so its parameters, hooks and engine) in the
    module-global `deepspeed.runtime.zero.parameter_offload.FWD_MODULE_STACK` for the life of the
    process (DeepSpeed 0.19.8; `engine.destroy()`, Trainer.release, removes the engine's hooks, not that
    entry). So the engine, model and parameters were freed only during interpreter finalization, where
    one 2-rank ZeRO-3 run of tests/evaclip/test_train_init.py aborted in a loaded CI run (after its
    final checkpoint; not reproduced in 30 loaded reruns, so this is the likely cause, not a proven
    one). So: drop that stack, collect the engine's reference cycles, then destroy the groups
    (tests/evaclip/test_train_teardown.py checks that nothing of the engine is left). The group objects
    themselves stay referenced from outside Python's view (`deepspeed.initialize` adds 10 references
    that neither `engine.destroy()` nor destroy_process_group removes, DeepSpeed 0.19.8, torch 2.13);
    destroy_process_group shuts each one's backend down (ProcessGroup.shutdown) before exit."""
    _release_zero3_module_stack()
    gc.collect()
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    gc.collect()


def _release_zero3_module_stack() -> None:
    """Empty DeepSpeed ZeRO-3's forward module stack (see shutdown_distributed); the run is over."""
    offload = sys.modules.get("deepspeed.runtime.zero.parameter_offload")
    stack = getattr(offload, "FWD_MODULE_STACK", None)
    if isinstance(stack, list):
        stack.clear()


class Preemption:
    """SIGTERM (Kubernetes' grace period, Slurm's `--signal=TERM@lead`) or the job's own stop time
    (STOP_AT_ENV): the handler only remembers the signal; after each optimizer step the ranks agree
    on stopping, and on a time-based checkpoint, through a CPU group, so the agreement costs no
    device synchronisation."""

    def __init__(self, control_group: Any, stop_at: float | None = None) -> None:
        self.requested = False
        self.control_group = control_group
        self.stop_at = stop_at
        signal.signal(signal.SIGTERM, self._handler)

    def _handler(self, signum: int, frame: Any) -> None:
        self.requested = True

    def stop_wanted(self, now: float) -> bool:
        return self.requested or (self.stop_at is not None and now >= self.stop_at)

    def agree(self, due_by_time: bool) -> tuple[bool, bool]:
        """Collective: (stop, checkpoint due by time), true on every rank when true on any."""
        flags = torch.tensor([float(self.stop_wanted(time.time())), float(due_by_time)], dtype=torch.float64)
        dist.all_reduce(flags, op=dist.ReduceOp.MAX, group=self.control_group)
        return bool(flags[0]), bool(flags[1])


@dataclass
class StepOutput:
    """What one optimizer step leaves for its metrics record (tensors stay on the device)."""

    lr: float
    loss_sum: torch.Tensor  # summed over the micro-batches of this rank
    logit_scale: torch.Tensor  # as the step's last forward returned it
    comm_before: CommTotals


class Trainer:
    def __init__(self, ds_cfg: dict[str, Any], run: RunConfig) -> None:
        self.ds_cfg, self.run = ds_cfg, run
        self._init_distributed()
        self._init_device()
        self._build_engine(self._build_model())
        ckpt_dir = Path(run.checkpoint.dir)
        if not ckpt_dir.is_absolute():
            ckpt_dir = self.out_dir / ckpt_dir
        self.checkpointer = Checkpointer(ckpt_dir, s3_uri=run.checkpoint.s3_uri, keep=run.checkpoint.keep)
        self.step, self.resumed_from = 0, None
        if run.checkpoint.resume:
            self.resume()
        self.batches = self._build_batches()
        self.flops_per_sample = train_flops_per_sample(run.model, run.image_size, run.patch_dropout)
        self.peak_tflops = run.hardware.bf16_dense_tflops.value if run.hardware else None
        self.metrics = MetricsWriter(run.metrics_path(), enabled=self.rank == 0)
        self.comms_on = bool(ds_cfg.get("comms_logger", {}).get("enabled"))
        self.preemption = Preemption(self.control_group, stop_at_from_env())
        self._announce()

    # -- building --------------------------------------------------------------------------

    def _init_distributed(self) -> None:
        ensure_single_process_env()  # `python -m evaclip.train` without a launcher
        deepspeed.init_distributed()
        self.rank, self.world = dist.get_rank(), dist.get_world_size()
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        ds_cfg = self.ds_cfg
        self.mb, self.gas = ds_cfg["train_micro_batch_size_per_gpu"], ds_cfg["gradient_accumulation_steps"]
        if ds_cfg["train_batch_size"] != self.mb * self.gas * self.world:
            raise EvaplanError(
                f"train_batch_size {ds_cfg['train_batch_size']} != micro batch {self.mb} × grad accum {self.gas} × world size {self.world}",
                hint="launch with the number of GPUs the plan was made for, or re-plan",
            )
        self.global_batch = self.mb * self.gas * self.world
        self.zero_stage = int(ds_cfg.get("zero_optimization", {}).get("stage", 0))

    def _init_device(self) -> None:
        if torch.cuda.is_available():
            torch.cuda.set_device(self.local_rank)
            self.device = torch.device("cuda", self.local_rank)
        else:
            self.device = torch.device("cpu")
        self.dtype, self.precision = torch.float32, "fp32"
        if self.ds_cfg.get("bf16", {}).get("enabled"):
            self.dtype, self.precision = torch.bfloat16, "bf16"
        elif self.ds_cfg.get("fp16", {}).get("enabled"):
            self.dtype, self.precision = torch.float16, "fp16"
        unsupported = cpu_precision_unsupported(self.precision) if self.device.type == "cpu" else None
        if unsupported:
            raise EvaplanError(
                f"cannot train in {self.precision} here: {unsupported}",
                hint="re-render the plan with --precision bf16 to train on this CPU",
            )

    def _build_model(self) -> torch.nn.Module:
        """The model (ZeRO-3: partitioned as created), released weights, compiled blocks."""
        run, spec = self.run, self.run.model
        torch.manual_seed(run.seed)
        with deepspeed.zero.Init(config_dict_or_path=self.ds_cfg, enabled=self.zero_stage == 3):
            model = build_model(
                spec, image_size=run.image_size, patch_dropout=run.patch_dropout, grad_ckpt=run.grad_ckpt
            )
        self.out_dir = Path(run.output_dir)
        if run.init_from.any:
            load_pretrained(
                model,
                spec,
                model_uri=run.init_from.model,
                vision_uri=run.init_from.vision,
                text_uri=run.init_from.text,
                strict=run.init_from.strict,
                scratch=self.out_dir / ".init",
                log=(lambda line: print(f"[evaclip] {line}", flush=True)) if self.rank == 0 else None,
            )
        self.compile_state = None
        if should_compile(run.compile, self.device, self.zero_stage):
            self.compile_state = compile_blocks(
                model, warn=lambda line: print(f"[evaclip] warning: {line}", file=sys.stderr, flush=True)
            )
        self.kernels = tower_attention_kernels(spec, run.image_size, self.mb, self.dtype, self.device)
        return model

    def _build_engine(self, model: torch.nn.Module) -> None:
        """The DeepSpeed engine on our layer-decay groups (its own optimizer when the config has one)."""
        groups = param_groups(model, self.run)
        client_optimizer = (
            None
            if "optimizer" in self.ds_cfg
            else build_optimizer(groups, self.run, fused=self.device.type == "cuda")
        )
        model_parameters = [{k: v for k, v in g.items() if k != "names"} for g in groups]
        self.engine, _, _, _ = deepspeed.initialize(
            model=model,
            optimizer=client_optimizer,
            model_parameters=model_parameters if client_optimizer is None else None,
            config=self.ds_cfg,
        )
        self.optimizer = self.engine.optimizer
        self.logit_scale = self.engine.module.logit_scale
        # Flags the ranks must agree on (SIGTERM, time-based checkpoint) go through a CPU group, so the
        # agreement costs no device synchronisation (with gloo the default group already is one).
        self.control_group = None if dist.get_backend() == "gloo" else dist.new_group(backend="gloo")

    def _build_batches(self) -> Any:
        """This rank's micro-batches from the first one after `self.step` (a resumed run repeats)."""
        run, context_length = self.run, self.run.model.text.context_length
        if run.data.kind == "synthetic":
            pairs = evdata.SyntheticPairs(
                image_size=run.image_size,
                context_length=context_length,
                classes=run.data.synthetic_classes,
                seed=run.data.seed,
            )
            return evdata.synthetic_batches(
                pairs,
                micro_batch=self.mb,
                rank=self.rank,
                world_size=self.world,
                start_micro_step=self.step * self.gas,
            )
        stream = evdata.ShardStream(
            run.data.url or "",
            image_size=run.image_size,
            context_length=context_length,
            rank=self.rank,
            world_size=self.world,
            seed=run.data.seed,
            skip_samples=self.step * self.gas * self.mb,
        )
        return iter(evdata.shard_batches(stream, micro_batch=self.mb, num_workers=run.data.num_workers))

    def _announce(self) -> None:
        """The `start` record and, on rank 0, the attention / compile line."""
        run = self.run
        compile_desc = self.compile_state.describe() if self.compile_state else "off"
        self.metrics.write(
            "start",
            job_name=run.job_name,
            model=run.model.name,
            hardware=run.hardware.name if run.hardware else None,
            world_size=self.world,
            micro_batch=self.mb,
            grad_accum=self.gas,
            global_batch=self.global_batch,
            zero_stage=self.zero_stage,
            precision=self.precision,
            total_steps=run.total_steps,
            image_size=run.image_size,
            patch_dropout=run.patch_dropout,
            grad_ckpt=run.grad_ckpt,
            optimizer=run.optimizer,
            start_step=self.step,
            resumed_from=self.resumed_from,
            flops_per_sample=self.flops_per_sample,
            peak_tflops=self.peak_tflops,
            device=self.device.type,
            time=time.time(),
            compile=compile_desc,
            attention_kernels=self.kernels,
            init_from=run.init_from.model_dump() if run.init_from.any else None,
        )
        if self.rank == 0:
            print(
                f"[evaclip] attention: vision {self.kernels['vision']}, text {self.kernels['text']}; "
                f"compile: {compile_desc}",
                flush=True,
            )

    # -- checkpoint state ------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint saves besides the engine (DeepSpeed's client_state)."""
        return {"step": self.step, "samples_seen": self.step * self.global_batch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step = int(state.get("step", 0))

    def resume(self) -> None:
        """Collective: load the newest good checkpoint, if any (evaclip.checkpoint)."""
        loaded = self.checkpointer.load_latest(self.engine)
        if loaded is None:
            return
        self.resumed_from, state = loaded
        self.load_state_dict(state)
        if self.rank == 0:
            print(f"[evaclip] resumed from {self.resumed_from} at step {self.step}", flush=True)

    def save(self, reason: str) -> None:
        """Collective: checkpoint this step, record it and say so on rank 0."""
        tag, secs, uploaded = self.checkpointer.save(self.engine, self.step, self.state_dict())
        self.metrics.write(
            "checkpoint", step=self.step, tag=tag, seconds=round(secs, 3), uploaded=uploaded, reason=reason
        )
        if self.rank == 0:
            print(
                f"[evaclip] checkpoint {tag} ({reason}) in {secs:.1f} s{' + S3' if uploaded else ''}",
                flush=True,
            )

    # -- the loop --------------------------------------------------------------------------

    def train_step(self) -> StepOutput:
        """One optimizer step: `gas` micro-batches forward and backward, then the logit-scale clamp."""
        run = self.run
        torch.manual_seed(run.seed + 1_000_003 * (self.step + 1) + self.rank)  # patch dropout / drop path
        lr = set_lr(
            self.optimizer, lr_factor(self.step, warmup_steps=run.warmup_steps, total_steps=run.total_steps)
        )
        comm_before = _comm_totals(ds_comm.comms_logger) if self.comms_on else {}
        loss_sum = torch.zeros((), dtype=torch.float32, device=self.device)  # stays on the device
        for _ in range(self.gas):
            images, tokens = next(self.batches)
            img, txt, scale = self.engine(
                images.to(self.device, self.dtype, non_blocking=True),
                tokens.to(self.device, non_blocking=True),
            )
            loss = clip_loss(
                img, txt, scale, local_loss=run.local_loss, gather_with_grad=run.gather_with_grad
            )
            self.engine.backward(loss)
            self.engine.step()
            loss_sum += loss.detach().float()
        clamp_logit_scale(self.logit_scale, self.optimizer)  # after the optimizer step, as the official loop
        self.step += 1
        return StepOutput(lr, loss_sum, scale, comm_before)

    def train(self) -> int:
        """The loop; returns the exit code (0 done, EXIT_PREEMPTED after the SIGTERM checkpoint)."""
        self.t_start = self.last_ckpt_time = self.last_log_time = time.time()
        self.last_log_step = self.step
        self.last_saved = self.step if self.resumed_from else None
        self.engine.train()
        while self.step < self.run.total_steps:
            out = self.train_step()
            stop, due_by_time = self.preemption.agree(self._checkpoint_due_by_time())
            if stop or self._log_due():
                self.log_step(out)
            if stop:
                self.save("sigterm")
                self.close("preempted")
                return EXIT_PREEMPTED
            every = self.run.checkpoint.every_steps
            if (every and self.step % every == 0) or due_by_time:
                self.save_periodic()
        if self.last_saved != self.step:
            self.save("final")
        self.close("completed")
        return 0

    def _log_due(self) -> bool:
        return self.step % self.run.log_every_steps == 0 or self.step == self.run.total_steps

    def _checkpoint_due_by_time(self) -> bool:
        every_s = self.run.checkpoint.every_s
        return every_s is not None and time.time() - self.last_ckpt_time >= every_s

    def save_periodic(self) -> None:
        self.save("periodic")
        self.last_saved, self.last_ckpt_time = self.step, time.time()
        # The next record's step time measures training steps, not the checkpoint.
        self.last_log_time, self.last_log_step = self.last_ckpt_time, self.step

    def log_step(self, out: StepOutput) -> None:
        """The `step` record and progress line: the one place the loop waits for the device."""
        comm_after = _comm_totals(ds_comm.comms_logger) if self.comms_on else {}
        # The loss of this step summed over ranks (outside deepspeed.comm, so the comms logger does
        # not count it).
        dist.all_reduce(out.loss_sum)
        mean_loss = float(out.loss_sum) / self.gas / self.world
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        now = time.time()
        # The mean since the last record.
        step_time = (now - self.last_log_time) / (self.step - self.last_log_step)
        self.last_log_time, self.last_log_step = now, self.step
        samples_per_s = self.global_batch / step_time
        tflops = self.flops_per_sample * samples_per_s / self.world / 1e12
        peak, kind = _peak_mem(self.device)
        rec: dict[str, Any] = {
            "step": self.step,
            "samples_seen": self.step * self.global_batch,
            "time_s": round(now - self.t_start, 4),
            "step_time_s": round(step_time, 6),
            "samples_per_s": samples_per_s,
            "loss": mean_loss,
            "lr": out.lr,
            "tflops_per_gpu": tflops,
            "mfu": tflops / self.peak_tflops if self.peak_tflops else None,
            "peak_mem_bytes": peak,
            "peak_mem_kind": kind,
            "world_size": self.world,
            "micro_batch": self.mb,
            "grad_accum": self.gas,
            "zero_stage": self.zero_stage,
            "attention": last_attention_backend(),
            "logit_scale": float(out.logit_scale.detach().float().reshape(-1)[0]),
            "compiled": bool(self.compile_state and self.compile_state.active),
        }
        if self.comms_on:
            rec.update(_comm_delta(out.comm_before, comm_after))
        self.metrics.write("step", **rec)
        if self.rank == 0:
            print(progress_line(rec, self.run.total_steps), flush=True)

    def release(self) -> None:
        """DeepSpeed's own teardown of the engine (`DeepSpeedEngine.destroy`): it removes the ZeRO-3
        gradient-accumulation hooks, which reach the optimizer and parameters through the C++ autograd
        graph, a cycle Python's collector cannot see, so without this the engine and the process groups
        its parameters hold live until interpreter exit (shutdown_distributed). A failure here is one
        warning line: the run's own outcome stands."""
        engine = getattr(self, "engine", None)
        if engine is None:
            return
        try:
            engine.destroy()
        except Exception as e:  # teardown only: the exit code stays the run's
            print(
                f"warning: DeepSpeed engine teardown failed: {type(e).__name__}: {e}",
                file=sys.stderr,
                flush=True,
            )
        self.engine = None

    def close(self, status: str) -> None:
        """The `end` record, DeepSpeed's comms summary, and a barrier so no rank leaves early."""
        self.metrics.write("end", step=self.step, status=status, time_s=round(time.time() - self.t_start, 3))
        self.metrics.close()
        if self.comms_on:
            ds_comm.log_summary()
        dist.barrier()
