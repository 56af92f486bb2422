"""`evaplan train`: run the bundled trainer locally — a thin wrapper of `python -m evaclip.train`
(under `torch.distributed.run --standalone`, through evaclip.rank_launcher, when more than one process per
node is asked for: a failed rank is reported in one line)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import click

from evaclip.config import empty_init_path_check
from planner.errors import EvaplanError, RuntimeFailure


def _weights_uri(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """An --init-*-from value: absent, or a path / URI; empty (an unset shell variable) is an error."""
    if value is not None:
        empty_init_path_check(param.opts[0], value)
    return value


def trainer_command(
    ds_config: str, run_config: str, nproc_per_node: int, extra: list[str] | None = None
) -> list[str]:
    """The exact command line `evaplan train` runs (`extra`: trainer flags passed through)."""
    args = ["-m", "evaclip.train", "--ds-config", ds_config, "--run-config", run_config, *(extra or [])]
    if nproc_per_node > 1:
        # torch.distributed.run with its arguments, reporting a failed rank in one line (exit 2 for
        # bad input) instead of torchrun's traceback.
        return [
            sys.executable,
            "-m",
            "evaclip.rank_launcher",
            "--standalone",
            f"--nproc_per_node={nproc_per_node}",
            *args,
        ]
    return [sys.executable, *args]


def _weights_option(flag: str, help: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """A PATH|s3://… of weights to start from (checked by `_weights_uri`)."""
    return click.option(flag, metavar="PATH|s3://…", callback=_weights_uri, help=help)


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
@_weights_option("--init-from", "Start the whole model from weights (official EVA-CLIP layout).")
@_weights_option("--init-vision-from", "Start the vision tower from EVA-CLIP or EVA MIM weights.")
@_weights_option("--init-text-from", "Start the text tower from EVA-CLIP or OpenCLIP weights.")
@click.option(
    "--init-strict",
    type=click.Choice(["true", "false"]),
    default=None,
    help="Stop on missing/unexpected/reshaped keys [run config, default true].",
)
@click.option(
    "--compile",
    "compile_mode",
    type=click.Choice(["auto", "on", "off"]),
    default=None,
    help="torch.compile every block [run config, default auto: on a GPU below ZeRO-3].",
)
@click.option("--print-command", is_flag=True, help="Print the command instead of running it.")
def command(
    ds_config: str,
    run_config: str,
    nproc_per_node: int,
    init_from: str | None,
    init_vision_from: str | None,
    init_text_from: str | None,
    init_strict: str | None,
    compile_mode: str | None,
    print_command: bool,
) -> None:
    """Train EVA-CLIP with DeepSpeed from a rendered config (exit code: the trainer's)."""
    if init_from and (init_vision_from or init_text_from):
        raise EvaplanError(
            "--init-from loads both towers", hint="drop --init-vision-from / --init-text-from, or --init-from"
        )
    extra: list[str] = []
    for flag, value in (
        ("--init-from", init_from),
        ("--init-vision-from", init_vision_from),
        ("--init-text-from", init_text_from),
        ("--init-strict", init_strict),
        ("--compile", compile_mode),
    ):
        if value:
            extra += [flag, value]
    cmd = trainer_command(ds_config, run_config, nproc_per_node, extra)
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
    if rc == 2 or (rc == 1 and nproc_per_node > 1):
        sys.exit(rc)  # the trainer (or its rank launcher) already printed its one-line `error:`
    if rc != 0:
        raise RuntimeFailure(f"the trainer exited with code {rc}", hint="see its output above")
