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
]


def _validation_line(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err.get("loc", ())) or exc.title
        msg = err.get("msg", "invalid").removeprefix("Value error, ")
        parts.append(f"{loc}: {msg}")
    return f"invalid {exc.title}: " + "; ".join(parts)


class EvaplanGroup(click.Group):
    """Loads command modules on demand and turns known errors into one clear line."""

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
@click.version_option(package_name="evaplan")
@click.pass_context
def main(ctx: click.Context, profiles_dirs: tuple[str, ...]) -> None:
    """Plan, price and launch EVA-CLIP training with DeepSpeed on H100 / MI300X clusters."""
    ctx.ensure_object(dict)
    ctx.obj["profiles_dirs"] = list(profiles_dirs)


if __name__ == "__main__":  # pragma: no cover
    main()
