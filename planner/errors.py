"""Errors a user can cause, and the exit codes the CLI maps them to.

Every error here renders as a single line that names the problem and how to fix it; the CLI
prints `error: <line>` and exits with `exit_code`, never with a traceback.
"""

from __future__ import annotations


class EvaplanError(Exception):
    """Base class: bad input from the user (exit code 2)."""

    exit_code = 2

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        self.message = message
        self.hint = hint
        super().__init__(self.line())

    def line(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class ProfileError(EvaplanError):
    """A profile file or name that cannot be used."""


class InfeasibleError(EvaplanError):
    """A request that cannot be satisfied (does not fit, batch not reachable, ...)."""


class RuntimeFailure(EvaplanError):
    """Something failed at run time that is not the user's input (exit code 1)."""

    exit_code = 1
