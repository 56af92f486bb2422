"""`evaplan train`: run the bundled trainer locally — a thin wrapper of `python -m evaclip.train`
(under `torch.distributed.run --standalone` when more than one process per node is asked for)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import click

from planner.errors import EvaplanError, RuntimeFailure


def trainer_command(ds_config: str, run_config: str, nproc_per_node: int) -> list[str]:
    """The exact command line `evaplan train` runs."""
    args = ["-m", "evaclip.train", "--ds-config", ds_config, "--run-config", run_config]
    if nproc_per_node > 1:
        return [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc_per_node={nproc_per_node}",
            *args,
        ]
    return [sys.executable, *args]


@click.command("train")
@click.option(
    "--ds-config",
    required=True,
    type=click.Path(exists=True, dir_okay=False),
    help="DeepSpeed config JSON (rendered by evaplan).",
)
@click.option(
    "--run-config",
    required=True,
    type=click.Path(exists=True, dir_okay=False),
    help="evaclip RunConfig JSON (rendered by evaplan).",
)
@click.option(
    "--nproc-per-node",
    default=1,
    show_default=True,
    type=click.IntRange(1, 64),
    help="Processes (GPUs, or CPU ranks with gloo) on this machine.",
)
@click.option("--print-command", is_flag=True, help="Print the command instead of running it.")
def command(ds_config: str, run_config: str, nproc_per_node: int, print_command: bool) -> None:
    """Train EVA-CLIP with DeepSpeed from a rendered config (exit code: the trainer's)."""
    cmd = trainer_command(ds_config, run_config, nproc_per_node)
    if print_command:
        click.echo(" ".join(cmd))
        return
    missing = [m for m in ("torch", "deepspeed") if importlib.util.find_spec(m) is None]
    if missing:
        raise EvaplanError(f"training needs {' and '.join(missing)}", hint="pip install 'evaplan[train]'")
    try:
        rc = subprocess.call(cmd)
    except OSError as e:
        raise RuntimeFailure(f"could not start the trainer: {e}") from None
    if rc == 2:
        sys.exit(2)  # the trainer already printed its one-line `error:`
    if rc != 0:
        raise RuntimeFailure(f"the trainer exited with code {rc}", hint="see its output above")
