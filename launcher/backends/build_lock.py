"""DeepSpeed's op build lock: found, judged stale or live, and removed when stale.

torch JIT-builds DeepSpeed's C++ ops (cpu_adam, deepspeed_shm_comm, ...) on a job's first local
run, holding a `lock` file in the op's build folder (torch.utils.file_baton.FileBaton: a plain
file made with O_CREAT|O_EXCL, no owner recorded). A build killed mid-way leaves the file behind
and every later build of that op waits on it forever. A lock is judged live while any process
works in the op's folder (ninja and the compiler run there) or while anything in that folder
changed within `QUIET_S` (torch takes the lock, then checks the compiler and writes build.ninja
before ninja starts: measured at over 10 s on this loaded 2-core machine, so age alone is not
enough); otherwise it is stale.

Standard library only: the supervisor loads this module too.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from planner.errors import RuntimeFailure

# How long an op's build folder must be quiet (no file in it changed, no process working in it)
# before its lock counts as stale. Generous against a slow pre-ninja phase; the cost is that a
# run started right after a killed build waits this long for the supervisor's sweep.
QUIET_S = 120.0


def extension_roots() -> list[Path]:
    """Where torch builds extensions: $TORCH_EXTENSIONS_DIR/<op>/, else
    <user cache>/torch_extensions/py<ver>_<accelerator>/<op>/ (torch/utils/cpp_extension.py,
    _get_build_directory and get_default_build_root)."""
    env = os.environ.get("TORCH_EXTENSIONS_DIR")
    if env:
        return [Path(env)]
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return [Path(cache) / "torch_extensions"]


def lock_files(roots: list[Path] | None = None) -> list[Path]:
    out: list[Path] = []
    for root in roots if roots is not None else extension_roots():
        out += [*root.glob("*/lock"), *root.glob("*/*/lock")]
    return sorted(set(out))


def working_in(folder: Path) -> bool:
    """Whether any process works in `folder` or below it now."""
    d = str(folder.resolve())
    return any(c == d or c.startswith(d + os.sep) for c in _cwds())


def _cwds() -> list[str]:
    """Every readable process's working folder."""
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                out.append(os.readlink(d / "cwd"))
            except OSError:
                continue
    return out


def _last_change(folder: Path) -> float:
    """The newest modification time of the folder or anything directly in it (ninja writes
    objects, .ninja_log and .ninja_deps there as it goes)."""
    newest = folder.stat().st_mtime
    for p in folder.iterdir():
        try:
            newest = max(newest, p.lstat().st_mtime)
        except FileNotFoundError:
            continue
    return newest


def stale_locks(roots: list[Path] | None = None, quiet_s: float | None = None) -> list[Path]:
    """The locks under `roots` that no build holds (see the module doc)."""
    quiet_s = QUIET_S if quiet_s is None else quiet_s
    locks = lock_files(roots)
    if not locks:
        return []
    cwds = _cwds()
    now = time.time()
    out = []
    for lock in locks:
        op_dir = str(lock.parent.resolve())
        if any(c == op_dir or c.startswith(op_dir + os.sep) for c in cwds):
            continue  # ninja or the compiler is at work there
        try:
            if now - _last_change(lock.parent) < quiet_s:
                continue  # recent activity: its builder may be between steps
        except FileNotFoundError:
            continue
        out.append(lock)
    return out


def clear_stale_build_locks(
    dry_run: bool = False, roots: list[Path] | None = None, quiet_s: float | None = None
) -> list[str]:
    """Remove every stale op build lock under `roots` (default: this environment's); returns one
    note per lock removed (or, with `dry_run`, that would be)."""
    notes: list[str] = []
    for lock in stale_locks(roots, quiet_s):
        if not dry_run:
            try:
                lock.unlink()
            except FileNotFoundError:
                continue
            except OSError as e:
                raise RuntimeFailure(
                    f"a stale DeepSpeed op build lock {lock} cannot be removed: {e.strerror}",
                    hint="remove it by hand; no process is building that op",
                ) from None
        notes.append(
            f"{'would remove' if dry_run else 'removed'} a stale DeepSpeed op build lock {lock} "
            "(no process is building that op; a killed build left it)"
        )
    return notes
