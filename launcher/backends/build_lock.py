"""DeepSpeed's op build lock: found, judged stale or live, and removed when stale.

torch JIT-builds DeepSpeed's C++ ops (cpu_adam, deepspeed_shm_comm, ...) on a job's first local
run, holding a `lock` file in the op's build folder (torch.utils.file_baton.FileBaton: a plain
file made with O_CREAT|O_EXCL, no owner recorded). A build killed mid-way leaves the file behind
and every later build of that op waits on it forever. A lock is judged live while any process
works in the op's folder (ninja and the compiler run there) or while it is younger than
`MIN_AGE_S` (the moments between torch taking the lock and starting ninja); otherwise it is stale.

Standard library only: the supervisor loads this module too.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from planner.errors import RuntimeFailure

# Between FileBaton's acquire and ninja's start torch only writes build.ninja: well under a
# second on an idle machine; 10 s leaves room for a loaded one without delaying a real clean-up
# much (the supervisor sweeps again while the job waits).
MIN_AGE_S = 10.0


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


def clear_stale_build_locks(
    dry_run: bool = False, roots: list[Path] | None = None, min_age_s: float = MIN_AGE_S
) -> list[str]:
    """Remove every stale op build lock under `roots` (default: this environment's); returns one
    note per lock removed (or, with `dry_run`, that would be)."""
    notes: list[str] = []
    locks = lock_files(roots)
    if not locks:
        return notes
    cwds = _cwds()
    now = time.time()
    for lock in locks:
        op_dir = str(lock.parent.resolve())
        if any(c == op_dir or c.startswith(op_dir + os.sep) for c in cwds):
            continue  # ninja or the compiler is at work there
        try:
            if now - lock.stat().st_mtime < min_age_s:
                continue  # just taken: its builder may not have started ninja yet
        except FileNotFoundError:
            continue
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
