"""Defaults from a config file, so that a team need not repeat --profiles-dir, --offering, --namespace
or --image on every command.

Looked up in order, first found wins: `--config FILE`; `evaplan.toml` in the current folder or the
nearest parent that holds one (stopping at a folder with .git or pyproject.toml); then
`$XDG_CONFIG_HOME/evaplan/config.toml` (default `~/.config/evaplan/config.toml`). Flags given on the
command line always win. Example:

    profiles_dir = ["./profiles-ours"]   # extra profile folders (relative to the file)
    offering = "aws-p5"                  # --offering (and so the hardware) of estimate, render, launch
    pricing = "spot"                     # --pricing of estimate, plan, compare
    namespace = "ml-train"               # --namespace of render, launch, status, ...
    image = "ghcr.io/acme/evaclip:1.0"   # --image of render, launch, plan --render
    hbm_headroom = "12%"                 # --hbm-headroom of estimate, plan, compare, render
    objective = "time"                   # --objective of estimate, plan, compare
    partition = "gpu"                    # Slurm: --partition, --account, --qos, --constraint of render
    account = "ml"                       #   and launch
    work_dir = "/shared/evaplan"         # Slurm: --work-dir (the shared filesystem folder)
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from planner.errors import EvaplanError

FILE_NAME = "evaplan.toml"
KEYS: dict[str, str] = {  # config key → click parameter name
    "offering": "offering_name",
    "pricing": "pricing",
    "namespace": "namespace",
    "image": "image",
    "hbm_headroom": "hbm_headroom",
    "objective": "objective",
    # the slurm flavour (render, launch)
    "partition": "partition",
    "account": "account",
    "qos": "qos",
    "constraint": "constraint",
    "work_dir": "work_dir",
}
SLURM_CONFIG_PARAMS = ("partition", "account", "qos", "constraint", "work_dir")
MAX_CONFIG_BYTES = 1 << 16


def find_config(start: Path | None = None) -> Path | None:
    """The project's evaplan.toml, else the user's config.toml, else None."""
    here = (start or Path.cwd()).resolve()
    for d in (here, *here.parents):
        if (d / FILE_NAME).is_file():
            return d / FILE_NAME
        if (d / ".git").exists() or (d / "pyproject.toml").is_file():
            break
    base = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    user = base / "evaplan" / "config.toml"
    return user if user.is_file() else None


def load_config(path: Path) -> dict[str, Any]:
    """The file's settings, checked: one line naming the problem otherwise."""
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - 3.10
        import tomli as tomllib
    try:
        if not path.is_file() or path.stat().st_size > MAX_CONFIG_BYTES:
            raise EvaplanError(f"config {path} is not a regular file under 64 KiB", hint="check the path")
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise EvaplanError(f"cannot read config {path}: {e.strerror}", hint="check the path") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise EvaplanError(f"config {path} is not valid TOML: {e}", hint="fix the file") from None
    allowed = ("profiles_dir", *KEYS)
    for key, value in data.items():
        if key not in allowed:
            raise EvaplanError(f"config {path}: unknown key '{key}'", hint=f"use {', '.join(allowed)}")
        if key == "profiles_dir":
            if isinstance(value, str):
                value = [value]
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise EvaplanError(f"config {path}: profiles_dir must be a folder or a list of folders")
            data[key] = [str(path.parent / Path(v).expanduser()) for v in value]
        elif not isinstance(value, str):
            raise EvaplanError(f"config {path}: {key} must be a string", hint=f'e.g. {key} = "..."')
    return data


def default_map(config: dict[str, Any], command: Any) -> dict[str, Any]:
    """The config's values for the parameters this (sub)command has, as a click default_map."""
    names = {p.name for p in getattr(command, "params", [])}
    out: dict[str, Any] = {KEYS[k]: v for k, v in config.items() if k in KEYS and KEYS[k] in names}
    if hasattr(command, "commands"):  # a group (profiles, ...): its subcommands too
        for name, sub in command.commands.items():
            out[name] = default_map(config, sub)
    return out
