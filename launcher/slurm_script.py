"""The slurm flavour: one batch script (job.sbatch) from the same plan, sizing and trainer environment
as the Kubernetes manifests.

What the script asks of Slurm (sbatch(1), srun(1) of Slurm 22.05+):
- `--nodes` = the plan's nodes, one task per node (`--ntasks-per-node=1`: torchrun starts the node's
  ranks), `--gpus-per-node` = the plan's GPUs per node (none for a CPU profile), `--cpus-per-task` and
  `--mem` = the pod sizing's CPUs and memory (launcher/sizing.py: the same figures a pod requests).
- `--time`: --time-limit, else ceil((the planner's wall time + the signal lead) / 60) minutes, so the
  stop signal falls after the planned end; `evaplan launch --max-cost` lowers it to what the budget buys
  (sbatch's command-line --time overrides the script's).
- `--signal=TERM@<lead>`: Slurm sends SIGTERM to the job's steps <lead> seconds before the time limit
  (lead = the pod's terminationGracePeriodSeconds: the checkpoint write, twice, plus a step and a
  margin); evaclip/trainer.py (Preemption) checkpoints on SIGTERM at the next step and exits 143 (EXIT_PREEMPTED).
- `--requeue`: a node failure or preemption puts the job back in the queue; the trainer resumes from
  the newest checkpoint in <work dir>/<job>/checkpoints (run_config.json: checkpoint.resume).
- `srun` starts one `torchrun` per node with a c10d rendezvous on the first node of the allocation
  (torchrun docs, "Elastic launch": --rdzv-backend=c10d --rdzv-endpoint=HOST:PORT --rdzv-id=JOB).

Every value goes in shell-quoted (`| shquote`, shlex.quote) or as a plain #SBATCH value (`| sbatch_value`);
names are checked in render_options.py.
"""

from __future__ import annotations

import math
from typing import Any

from launcher.render_options import RenderOptions
from launcher.sizing import PlanInputs, Sizing
from launcher.templating import render_template
from planner.errors import EvaplanError

SCRIPT_FILE = "job.sbatch"
# torchrun prefixes each teed line with this (torch.distributed.run reads the template from
# TORCHELASTIC_LOG_LINE_PREFIX_TEMPLATE; ${rank} is the global rank): `evaplan logs --rank` reads it.
RANK_PREFIX_TEMPLATE = "[rank${rank}]:"
# The batch job's output file, in the job's folder (sbatch(1) filename pattern: %j is the job id).
OUTPUT_PATTERN = "slurm-%j.out"
CONFIG_DIR_NAME = "config"  # <work dir>/<job>/config: ds_config.json and run_config.json, copied at launch


def job_dir(opts: RenderOptions) -> str:
    """<work dir>/<job>: the job's configs, checkpoints, output and Slurm logs on the shared filesystem."""
    assert opts.work_dir is not None  # RenderOptions requires it for the slurm flavour
    return f"{opts.work_dir.rstrip('/')}/{opts.job_name}"


def time_limit_min(inputs: PlanInputs, opts: RenderOptions, sizing: Sizing) -> tuple[int, str]:
    """The script's --time in minutes, and how it was reached."""
    if opts.time_limit_min is not None:
        return opts.time_limit_min, f"--time {opts.time_limit_min} min (--time-limit)"
    wall_s = (inputs.estimate_json.get("time") or {}).get("wall_s")
    if not isinstance(wall_s, (int, float)):
        raise EvaplanError(
            "the plan records no wall time to derive the Slurm time limit from",
            hint="pass --time-limit MINUTES",
        )
    lead = sizing.termination_grace_period_s
    minutes = max(1, math.ceil((wall_s + lead) / 60.0))
    return (
        minutes,
        f"--time {minutes} min = ceil(({wall_s:.0f} s planned wall time + {lead} s signal lead) / 60)",
    )


def render_script(
    inputs: PlanInputs,
    opts: RenderOptions,
    sizing: Sizing,
    env: list[tuple[str, str]],
    ds_config_file: str,
    run_config_file: str,
) -> tuple[str, list[str]]:
    """job.sbatch's text and the lines explaining its figures."""
    plan, hw = inputs.plan, inputs.hardware
    minutes, why = time_limit_min(inputs, opts, sizing)
    folder = job_dir(opts)
    config = f"{folder}/{CONFIG_DIR_NAME}"
    options: list[tuple[str, Any]] = [
        ("job-name", opts.job_name),
        ("nodes", plan.nodes),
        ("ntasks-per-node", 1),
    ]
    if hw.vendor != "cpu":
        options.append(("gpus-per-node", plan.gpus_per_node))
    options += [
        ("cpus-per-task", sizing.cpu),
        ("mem", f"{sizing.memory_gib}G"),
        ("time", minutes),
        ("signal", f"TERM@{sizing.termination_grace_period_s}"),
        ("requeue", None),
        ("open-mode", "append"),  # a requeued job appends to its output file instead of truncating it
        ("chdir", folder),
        ("output", f"{folder}/{OUTPUT_PATTERN}"),
    ]
    for key in ("partition", "account", "qos", "constraint"):
        value = getattr(opts, key)
        if value is not None:
            options.append((key, value))
    script = render_template(
        "slurm/job.sbatch.j2",
        job=opts.job_name,
        options=options,
        env=[
            ("PYTHONUNBUFFERED", "1"),
            ("TORCHELASTIC_LOG_LINE_PREFIX_TEMPLATE", RANK_PREFIX_TEMPLATE),
            *env,
        ],
        python=opts.python,
        nodes=plan.nodes,
        nproc_per_node=plan.gpus_per_node,
        port=opts.master_port,
        ds_config=f"{config}/{ds_config_file}",
        run_config=f"{config}/{run_config_file}",
    )
    lead = sizing.termination_grace_period_s
    return script, [why, f"--signal TERM@{lead}: SIGTERM {lead} s before the limit (the grace period above)"]
