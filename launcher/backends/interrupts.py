"""Signals during a launch: SIGTERM and SIGHUP unwind it like ^C (so its rollback runs), and a
call whose outcome must be known (a create in flight) finishes before any of them acts.

SIGKILL cannot be caught: the intent the service records before any change covers that case.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

UNWINDING = (signal.SIGTERM, signal.SIGHUP)
# The signals `outcome_first` holds right now (what a diagnostic or a test can look at).
HELD: list[int] = []


class Terminated(KeyboardInterrupt):
    """SIGTERM/SIGHUP during a launch: unwinds like ^C so the rollback runs."""


def _install(handler: Any, sigs: tuple[int, ...]) -> dict[int, Any]:
    saved = {}
    for sig in sigs:
        try:
            saved[sig] = signal.signal(sig, handler)
        except (ValueError, OSError):
            pass
    return saved


@contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """While inside, SIGTERM and SIGHUP raise Terminated (a KeyboardInterrupt) in the main thread."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        raise Terminated(f"signal {signum}")

    saved = _install(handler, UNWINDING)
    try:
        yield
    finally:
        for sig, old in saved.items():
            signal.signal(sig, old)


@contextmanager
def outcome_first() -> Iterator[list[int]]:
    """Hold ^C, SIGTERM and SIGHUP until the block ends, then act on the first one (raise
    KeyboardInterrupt or Terminated): a create in flight gets its reply, so the rollback knows
    whether the object exists. A second signal while held acts at once (the user insists); the
    list yielded then holds that signal, and the caller treats the call's outcome as unknown."""
    pending: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield pending
        return

    def hold(signum: int, frame: Any) -> None:
        pending.append(signum)
        HELD.append(signum)
        if len(pending) > 1:
            _raise_for(signum)

    saved = _install(hold, (signal.SIGINT, *UNWINDING))
    try:
        yield pending
    finally:
        for sig, old in saved.items():
            signal.signal(sig, old)
        HELD.clear()
    if pending:
        _raise_for(pending[0])


def _raise_for(signum: int) -> None:
    if signum == signal.SIGINT:
        raise KeyboardInterrupt
    raise Terminated(f"signal {signum}")
