"""The `evaplan` command: a thin click group that parses, calls and prints.

Each command lives in `launcher/commands/<name>.py` and exposes a click command or group
called `command`. Errors a user can cause (`planner.errors.EvaplanError`, click usage errors,
invalid settings) end as one line on stderr and exit code 2; runtime failures exit 1. No
traceback reaches the user unless EVAPLAN_DEBUG=1.
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any

import click
from pydantic import ValidationError

import launcher.pydantic_plugins  # noqa: F401  (before pydantic builds a validator)
from planner.errors import EvaplanError

# (command name, module under launcher.commands). Imported lazily so that `evaplan estimate`
# never pays for the kubernetes client or torch.
COMMANDS: list[tuple[str, str]] = [
    ("profiles", "profiles"),
    ("train", "train"),
    ("estimate", "estimate"),
    ("render", "render"),
    ("launch", "launch"),
    ("status", "status"),
    ("logs", "logs"),
    ("stop", "stop"),
    ("list", "list_jobs"),
    ("watch", "watch"),
    ("plan", "plan"),
    ("compare", "compare"),
    ("calibrate", "calibrate"),
    ("serve", "serve"),
    ("validate", "validate"),
]


def _validation_line(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err.get("loc", ())) or exc.title
        msg = err.get("msg", "invalid").removeprefix("Value error, ")
        parts.append(f"{loc}: {msg}")
    return f"invalid {exc.title}: " + "; ".join(parts)


GLOBAL_OPTIONS = ("--profiles-dir", "--config")


class EvaplanGroup(click.Group):
    """Loads command modules on demand and turns known errors into one clear line."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        # Global options are accepted after the subcommand too: `evaplan estimate ... --profiles-dir D`.
        args = _hoist_global_options(args)
        try:
            return super().parse_args(ctx, args)
        except click.UsageError as e:
            if isinstance(e, click.exceptions.NoArgsIsHelpError):
                raise
            _fail(f"{e.format_message()} (see `evaplan -h`)", 2)
            raise  # unreachable: _fail exits

    def resolve_command(self, ctx: click.Context, args: list[str]) -> tuple[Any, Any, list[str]]:
        name = args[0] if args else ""
        if name and not name.startswith("-") and name not in dict(COMMANDS):
            import difflib  # only for a mistyped command

            close = difflib.get_close_matches(name, [n for n, _ in COMMANDS], n=2, cutoff=0.5)
            hint = f"did you mean {' or '.join(close)}?" if close else "`evaplan -h` lists the commands"
            raise EvaplanError(f"no command '{name}'", hint=hint)
        return super().resolve_command(ctx, args)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(name for name, _ in COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        for name, module in COMMANDS:
            if name == cmd_name:
                mod = importlib.import_module(f"launcher.commands.{module}")
                return mod.command
        return None

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except EvaplanError as e:
            _fail(e.line(), e.exit_code)
        except click.UsageError as e:
            # "evaplan <subcommand>" whatever the program was called (CliRunner calls it "main")
            where = " ".join(["evaplan", *(e.ctx.command_path.split()[1:] if e.ctx is not None else [])])
            _fail(f"{e.format_message()} (see `{where} -h`)", 2)
        except ValidationError as e:
            _fail(_validation_line(e), 2)
        except KeyboardInterrupt:
            _fail("interrupted", 130)
        except (click.exceptions.Exit, click.ClickException, click.exceptions.Abort):
            raise
        except BrokenPipeError:
            # `evaplan ... | head` closed the pipe: not an error worth a traceback.
            sys.stderr.close()
            sys.exit(0)
        except Exception as e:
            if os.environ.get("EVAPLAN_DEBUG"):
                raise
            _fail(
                f"internal error: {type(e).__name__}: {e} (rerun with EVAPLAN_DEBUG=1 for a traceback and report it)",
                1,
            )


def _hoist_global_options(args: list[str]) -> list[str]:
    """Move global options found after the subcommand in front of it (values included)."""
    front: list[str] = []
    rest: list[str] = []
    i = 0
    seen_command = False
    while i < len(args):
        a = args[i]
        if a == "--":
            rest += args[i:]
            break
        if seen_command and a in GLOBAL_OPTIONS and i + 1 < len(args):
            front += [a, args[i + 1]]
            i += 2
            continue
        if seen_command and a.split("=", 1)[0] in GLOBAL_OPTIONS and "=" in a:
            front.append(a)
        else:
            if not a.startswith("-") and not seen_command and (not rest or rest[-1] not in GLOBAL_OPTIONS):
                seen_command = True
            rest.append(a)
        i += 1
    return front + rest


def _fail(line: str, code: int) -> None:
    click.echo(f"error: {line}", err=True)
    sys.exit(code)


@click.group(
    cls=EvaplanGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110}
)
@click.option(
    "--profiles-dir",
    "profiles_dirs",
    multiple=True,
    type=click.Path(file_okay=False),
    envvar="EVAPLAN_PROFILES_DIR_FLAG",
    help="Extra profile folder (models/, hardware/, offerings/ inside); repeatable. "
    "Also read from $EVAPLAN_PROFILES_DIR. User profiles override bundled ones of the same name.",
)
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="Defaults file (TOML); default: ./evaplan.toml (or a parent's), then ~/.config/evaplan/config.toml.",
)
@click.version_option(package_name="evaplan")
@click.pass_context
def main(ctx: click.Context, profiles_dirs: tuple[str, ...], config_path: str | None) -> None:
    """Plan, price and launch EVA-CLIP training with DeepSpeed on H100 / MI300X clusters.

    Shell completion (commands, flags, and model / hardware / offering names):
    eval "$(_EVAPLAN_COMPLETE=bash_source evaplan)" in ~/.bashrc (zsh_source, fish_source for others).
    """
    from pathlib import Path

    from launcher.config import default_map, find_config, load_config

    ctx.ensure_object(dict)
    path = Path(config_path) if config_path else find_config()
    config = load_config(path) if path is not None else {}
    ctx.obj["config_path"] = str(path) if path is not None else None
    ctx.obj["profiles_dirs"] = [*config.get("profiles_dir", []), *profiles_dirs]
    sub = ctx.invoked_subcommand
    if config and sub:
        cmd = ctx.command.get_command(ctx, sub)  # type: ignore[attr-defined]
        ctx.default_map = {sub: default_map(config, cmd)}


if __name__ == "__main__":  # pragma: no cover
    main()
