"""Shell completion of profile names for --model, --hardware and --offering (click's completion:
`eval "$(_EVAPLAN_COMPLETE=bash_source evaplan)"`; zsh_source and fish_source for other shells)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click
from click.shell_completion import CompletionItem


def profile_names(kind: str) -> Callable[[click.Context, click.Parameter, str], list[CompletionItem]]:
    """A click `shell_complete` callback listing the bundled and user profiles of one kind."""

    def complete(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
        from planner import profiles as prof

        root: Any = ctx.find_root()
        dirs = list(root.params.get("profiles_dirs") or ())
        try:
            names = prof.index(kind, dirs)
        except Exception:  # a broken profiles folder must not break the shell
            return []
        return [CompletionItem(n) for n in names if n.startswith(incomplete)]

    return complete
