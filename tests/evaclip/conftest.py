"""Helpers for the trainer tests: write configs and run `torchrun --standalone --nproc_per_node 2
-m evaclip.train` (2 CPU ranks, gloo) in a temporary folder."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
NPROC = 2
# A run is never given a fixed time: it is stopped only when it stops making progress (no output,
# no metrics) for a window: before its first step, start-up at load 8 and DeepSpeed's one-time CPU
# op build when `make dev` has not done it (silent, ~90 s idle, several times that loaded); after,
# STALL_STEP_INTERVALS × the slowest step interval measured in this run (at least STALL_MIN_S).
STARTUP_STALL_S = 1200.0
STALL_STEP_INTERVALS = 40.0
STALL_MIN_S = 180.0


@dataclass
class TrainRun:
    returncode: int
    log: str
    records: list[dict[str, Any]]
    out_dir: Path

    def steps(self) -> list[dict[str, Any]]:
        return [r for r in self.records if r.get("event") == "step"]

    def losses(self) -> dict[int, float]:
        return {r["step"]: r["loss"] for r in self.steps()}


def debug_run_config(out_dir: Path, **overrides: Any) -> dict[str, Any]:
    """A RunConfig (as a dict) for eva-clip-debug that learns the synthetic set in ~30 steps."""
    from planner.profiles import load_model

    spec = load_model("eva-clip-debug")
    cfg: dict[str, Any] = {
        "job_name": "evaclip-test",
        "model": spec.model_dump(mode="json"),
        "total_steps": 30,
        "image_size": 32,
        "patch_dropout": 0.0,
        "image_lr": 3e-4,
        "text_lr": 3e-4,
        "warmup_steps": 3,
        "grad_clip": 5.0,
        "output_dir": str(out_dir),
    }
    cfg.update(overrides)
    return cfg


def ds_config_for(
    zero_stage: int, *, micro_batch: int = 8, grad_accum: int = 1, comms_logger: bool = False, **plan_kw: Any
) -> dict[str, Any]:
    from planner.deepspeed_config import deepspeed_config
    from planner.spec import ParallelPlan

    plan = ParallelPlan(
        nodes=1,
        gpus_per_node=NPROC,
        zero_stage=zero_stage,
        micro_batch=micro_batch,
        grad_accum=grad_accum,
        grad_ckpt=False,
        **plan_kw,
    )
    return deepspeed_config(plan, grad_clip=5.0, comms_logger=comms_logger)


def _env(extra: dict[str, str] | None) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "OMP_NUM_THREADS": "1",  # 2 ranks on a 2-core machine
            "CUDA_VISIBLE_DEVICES": "",
            "PYTHONPATH": str(REPO) + os.pathsep + env.get("PYTHONPATH", ""),
            "PYTHONWARNINGS": "ignore::FutureWarning",
        }
    )
    env.pop("RANK", None)
    env.update(extra or {})
    return env


def start_torchrun(
    workdir: Path,
    ds_cfg: dict[str, Any],
    run_cfg: dict[str, Any],
    env: dict[str, str] | None = None,
    args: list[str] | None = None,
) -> subprocess.Popen:
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "ds.json").write_text(json.dumps(ds_cfg))
    (workdir / "run.json").write_text(json.dumps(run_cfg))
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={NPROC}",
        "-m",
        "evaclip.train",
        "--ds-config",
        str(workdir / "ds.json"),
        "--run-config",
        str(workdir / "run.json"),
        *(args or []),
    ]
    log = open(workdir / "train.log", "ab")
    return subprocess.Popen(
        cmd, cwd=workdir, env=_env(env), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )


def _metrics_path(run_cfg: dict[str, Any]) -> Path:
    return Path(run_cfg["output_dir"]) / run_cfg.get("metrics_file", "metrics.jsonl")


def _watch(proc: subprocess.Popen, workdir: Path, run_cfg: dict[str, Any], done: Any = lambda: False) -> bool:
    """Wait until `done()` or the process ends; True unless it was killed for making no progress."""
    from evaclip.metrics import read_metrics

    log, metrics = workdir / "train.log", _metrics_path(run_cfg)
    last, since = None, time.monotonic()
    step_seen: dict[int, float] = {}
    while proc.poll() is None and not done():
        now = time.monotonic()
        current = (
            log.stat().st_size if log.exists() else 0,
            metrics.stat().st_size if metrics.exists() else 0,
        )
        if current != last:
            last, since = current, now
            if metrics.exists():
                for r in read_metrics(metrics):
                    if r.get("event") == "step":
                        step_seen.setdefault(r["step"], now)
        steps = sorted(step_seen)
        if len(steps) >= 2:
            intervals = [step_seen[b] - step_seen[a] for a, b in itertools.pairwise(steps)]
            window = max(STALL_MIN_S, STALL_STEP_INTERVALS * max(intervals))
        else:
            window = STARTUP_STALL_S
        if now - since > window:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            with open(log, "a") as f:
                f.write(
                    f"\n[test] killed: no output and no metrics for {now - since:.0f} s (window {window:.0f} s)\n"
                )
            return False
        time.sleep(0.5)
    return True


def finish(proc: subprocess.Popen, workdir: Path, run_cfg: dict[str, Any]) -> TrainRun:
    from evaclip.metrics import read_metrics

    _watch(proc, workdir, run_cfg)
    proc.wait()
    log = (workdir / "train.log").read_text(errors="replace")
    metrics = _metrics_path(run_cfg)
    records = read_metrics(metrics) if metrics.exists() else []
    return TrainRun(proc.returncode, log, records, Path(run_cfg["output_dir"]))


def run_torchrun(
    workdir: Path,
    ds_cfg: dict[str, Any],
    run_cfg: dict[str, Any],
    env: dict[str, str] | None = None,
    args: list[str] | None = None,
) -> TrainRun:
    return finish(start_torchrun(workdir, ds_cfg, run_cfg, env, args), workdir, run_cfg)


def wait_for_step(run_cfg: dict[str, Any], step: int, proc: subprocess.Popen) -> None:
    """Block until the metrics file records `step` (or the process ends, or stops progressing)."""
    from evaclip.metrics import read_metrics

    path = _metrics_path(run_cfg)

    def reached() -> bool:
        return path.exists() and any(
            r.get("event") == "step" and r["step"] >= step for r in read_metrics(path)
        )

    _watch(proc, Path(run_cfg["output_dir"]).parent, run_cfg, reached)


@pytest.fixture
def s3_env(monkeypatch):
    """A moto S3 server on 127.0.0.1 for this test (stopped at its end) and the environment that
    points boto3 at it (set here and passed to trainer subprocesses)."""
    pytest.importorskip("boto3")
    moto_server = pytest.importorskip("moto.server")
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    env = {
        "AWS_ENDPOINT_URL_S3": f"http://{host}:{port}",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    try:
        yield env
    finally:
        server.stop()


@pytest.fixture(scope="session")
def trainer():
    """The helpers above, for test modules (conftest is not importable under importlib mode)."""
    pytest.importorskip("torch")
    pytest.importorskip("deepspeed")
    from types import SimpleNamespace

    return SimpleNamespace(
        env=_env,
        debug_run_config=debug_run_config,
        ds_config_for=ds_config_for,
        start_torchrun=start_torchrun,
        finish=finish,
        run_torchrun=run_torchrun,
        wait_for_step=wait_for_step,
    )


@pytest.fixture(scope="session")
def benchmark_script():
    """Load a script of benchmarks/ by its path (benchmarks/ is no package), registered under its name
    so the dataclasses it defines can look their module up."""
    import importlib.util

    def load(name: str) -> Any:
        spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
        mod = importlib.util.module_from_spec(spec)
        sys.modules[name] = mod
        spec.loader.exec_module(mod)
        return mod

    return load
