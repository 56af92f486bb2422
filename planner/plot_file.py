"""Writing a --plot PNG: the folder must exist, the file appears whole (temporary file in the same
folder, then a rename) or not at all, and a folder that cannot be written (read-only, /proc, full)
is one line naming the path, not a traceback."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from planner.errors import EvaplanError


def check_plot_path(path: str) -> Path:
    """The target of --plot PATH, refused before any work when its folder does not exist."""
    target = Path(path)
    if not target.parent.exists():
        raise EvaplanError(
            f"--plot {path}: folder {target.parent} does not exist", hint="create it or pick another path"
        )
    return target


def save_png(fig: Any, plt: Any, path: str) -> None:
    """Write matplotlib figure `fig` to `path` atomically and close it."""
    target = check_plot_path(path)
    tmp: str | None = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=".evaplan-plot-", suffix=".png", dir=target.parent)
        os.close(fd)
        fig.savefig(tmp, dpi=110, format="png")
        os.replace(tmp, target)
    except OSError as e:
        raise EvaplanError(
            f"--plot {path}: cannot write it ({e.strerror or e})", hint="pick a folder you can write to"
        ) from None
    finally:
        plt.close(fig)
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
