"""The logit scale is clamped in place to [0, ln 100] after the optimizer step, as the official loop
does, in the model's parameter and in DeepSpeed's fp32 master copy, for each ZeRO stage and
precision (2 gloo ranks). The master copy is the one that matters: the next step copies it into
the model, so a clamp of the model's copy alone would not last. Forward does not clamp."""

from __future__ import annotations

import math
import os
import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("deepspeed")

from evaclip.cpu_precision import cpu_precision_unsupported  # noqa: E402

LN100 = math.log(100.0)
CASES = [(0, "fp32"), (0, "bf16"), (1, "bf16"), (2, "fp16"), (3, "bf16")]
# A case whose precision this CPU lacks (fp16 without oneDNN fp16, e.g. AMD EPYC) is skipped with the
# reason, and its ZeRO stage is tested in bf16 instead, which DeepSpeed runs on every CPU.
RUNNABLE = [c for c in CASES if not cpu_precision_unsupported(c[1])]
RUNNABLE += [(s, "bf16") for s, p in CASES if (s, p) not in RUNNABLE and (s, "bf16") not in CASES]
PARAMS = [
    pytest.param(c, id=f"{c[0]}-{c[1]}", marks=pytest.mark.skip(reason=f"{c[1]}: {why}"))
    if (why := cpu_precision_unsupported(c[1]))
    else pytest.param(c, id=f"{c[0]}-{c[1]}")
    for c in [*CASES, *(c for c in RUNNABLE if c not in CASES)]
]

_SCRIPT = r"""
import json, sys, torch, deepspeed
from torch import nn
from deepspeed.utils import safe_get_full_fp32_param
from evaclip.logit_scale import clamp_logit_scale

deepspeed.init_distributed(dist_backend="gloo")
rank = torch.distributed.get_rank()
results = {}
for stage, precision in CASES:
    cfg = {"train_micro_batch_size_per_gpu": 2, "gradient_accumulation_steps": 1, "train_batch_size": 4,
           "zero_optimization": {"stage": stage}}
    if precision != "fp32":
        cfg[precision] = {"enabled": True}
    with deepspeed.zero.Init(config_dict_or_path=cfg, enabled=stage == 3):
        class M(nn.Module):
            def __init__(self):
                super().__init__()
                self.lin = nn.Linear(4, 4)
                self.logit_scale = nn.Parameter(torch.full((1,), 5.0))
            def forward(self, x):
                return (self.lin(x) * self.logit_scale.exp()).square().mean()
        model = M()
    opt = torch.optim.AdamW(model.parameters(), lr=0.0, weight_decay=0.0)
    engine, *_ = deepspeed.initialize(model=model, optimizer=opt, config=cfg)
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    def step():
        loss = engine(torch.ones(2, 4, dtype=dtype))
        engine.backward(loss)
        engine.step()
    def values():
        p = engine.module.logit_scale
        master = safe_get_full_fp32_param(p)  # collective under ZeRO-3
        with deepspeed.zero.GatheredParameters([p], enabled=stage == 3):
            model_value = float(p.detach().float().reshape(-1)[0])
        return model_value, None if master is None else float(master.reshape(-1)[0])
    step()
    before = values()
    clamp_logit_scale(engine.module.logit_scale, engine.optimizer)
    after = values()
    step()  # lr 0: the step copies the master into the model and must keep the clamp
    results[f"{stage}-{precision}"] = {"before": before, "after": after, "next": values()}
if rank == 0:
    json.dump(results, open(sys.argv[1], "w"))
"""


@pytest.fixture(scope="module")
def clamp_results(tmp_path_factory):
    """One torchrun of 2 gloo ranks over every case this CPU runs: {"stage-precision": values}."""
    import json

    tmp_path = tmp_path_factory.mktemp("clamp")
    script, out = tmp_path / "clamp.py", tmp_path / "out.json"
    script.write_text(f"CASES = {RUNNABLE!r}\n" + _SCRIPT)
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONWARNINGS": "ignore",
        "CUDA_VISIBLE_DEVICES": "",
    }  # TORCH_EXTENSIONS_DIR inherited: DeepSpeed's CPU op is the one `make ds-ops` built, not rebuilt

    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    # A backstop only: idle this takes ~20 s (five DeepSpeed engines); load 8 makes it 5-10× slower.
    proc = subprocess.run(
        [*cmd, str(script), str(out)], env=env, capture_output=True, text=True, timeout=1800
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(out.read_text())


@pytest.mark.parametrize("case", PARAMS)
def test_clamp_reaches_model_and_master_copies(case, clamp_results):
    stage, precision = case
    r = clamp_results[f"{stage}-{precision}"]
    model_before, master_before = r["before"]
    assert master_before is None or master_before == pytest.approx(5.0), case
    assert model_before == pytest.approx(5.0, abs=0.02), case  # forward left it above the cap
    for when in ("after", "next"):
        model_value, master = r[when]
        # 16-bit copies hold ln 100 to their precision (bf16: 8 significant bits).
        assert model_value == pytest.approx(LN100, abs=0.02), (case, when)
        if master is not None:
            assert master == pytest.approx(LN100, abs=1e-6), (case, when)
    # ZeRO-1..3 expose their master copy; the clamp must show there.
    if stage:
        assert r["after"][1] is not None, case


def test_unsupported_precision_is_named_by_deepspeed_too():
    """Our check and DeepSpeed's CPU accelerator agree on what this CPU can train in."""
    from deepspeed.accelerator.cpu_accelerator import CPU_Accelerator

    dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
    supported = CPU_Accelerator().supported_dtypes()
    for precision, dtype in dtypes.items():
        assert (cpu_precision_unsupported(precision) is None) == (dtype in supported), precision
