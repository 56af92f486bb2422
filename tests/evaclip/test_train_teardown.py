"""The trainer frees its DeepSpeed engine and process groups before the interpreter exits.

Under ZeRO-3 every parameter holds its process group, DeepSpeed keeps the top module in a
module-global stack and its gradient hooks close a cycle through the C++ autograd graph, so without
Trainer.release and evaclip.trainer.shutdown_distributed the engine, the model and the groups they
hold lived until interpreter finalization (where a gloo rank of a 2-rank run once aborted). One
process (a world of one) runs one ZeRO-3 step through `evaclip.train.main` and then looks.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.train]

PROBE = """
import gc, json, sys
import evaclip.train as tr
code = tr.main(["--ds-config", sys.argv[1], "--run-config", sys.argv[2]])
gc.collect()
import torch.distributed as dist
from deepspeed.runtime.zero import parameter_offload
alive = sorted({type(o).__name__ for o in gc.get_objects()
                if type(o).__name__ in ("DeepSpeedEngine", "EvaCLIP", "DeepSpeedZeroOptimizer_Stage3")})
import torch
zero3_params = sum(1 for o in gc.get_objects() if isinstance(o, torch.Tensor) and hasattr(o, "ds_process_group"))
print(json.dumps({"code": code, "alive": alive, "zero3_params": zero3_params,
                  "stack": len(parameter_offload.FWD_MODULE_STACK), "initialized": dist.is_initialized()}))
"""


def test_a_finished_run_leaves_no_engine_model_or_group_behind(tmp_path, trainer):
    cfg = trainer.debug_run_config(tmp_path / "out", total_steps=1, warmup_steps=10_000)
    ds_cfg = {k: v for k, v in trainer.ds_config_for(3, micro_batch=2).items() if k not in ("bf16", "fp16")}
    ds_cfg["train_batch_size"] = 2  # a world of one (the helper plans for the 2-rank tests)
    ds, run = tmp_path / "ds.json", tmp_path / "run.json"
    ds.write_text(json.dumps(ds_cfg))
    run.write_text(json.dumps(cfg))
    env = trainer.env(None)  # one thread per process, no GPU, this checkout on the path
    for var in ("WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):  # a world of one
        env.pop(var, None)
    res = subprocess.run(
        [sys.executable, "-c", PROBE, str(ds), str(run)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    report = json.loads(res.stdout.strip().splitlines()[-1])
    assert report == {"code": 0, "alive": [], "zero3_params": 0, "stack": 0, "initialized": False}, report
