"""Small file primitives the job store's own files share (owner id, bundle key)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from planner.errors import EvaplanError


def create_once(path: Path, text: str, what: str) -> None:
    """Write `path` (mode 0600) unless it exists: the text goes to a temporary sibling, is synced,
    then hard-linked into place, which is atomic and never overwrites, so concurrent first users
    agree on the one file that won. A failure is one line naming `what` and the path."""
    try:
        _create_once(path, text)
    except OSError as e:
        raise EvaplanError(
            f"cannot write {what} {path}: {e.strerror}", hint="set EVAPLAN_STATE_DIR to a writable folder"
        ) from None


def _create_once(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)  # mode 0600
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
    finally:
        os.unlink(tmp)
