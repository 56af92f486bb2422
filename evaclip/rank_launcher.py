"""torchrun that ends a failed run with one line: `python -m evaclip.rank_launcher [torchrun options]
-m evaclip.train ...` takes torch.distributed.run's own arguments and starts the ranks the same way.

When a rank fails, torchrun prints its agent's log lines, a ChildFailedError traceback and a table
of failures, and exits 1 whatever the ranks said. Here instead:

- every rank that stops on bad input leaves its `error:` line in the error file torchrun gives it
  (TORCHELASTIC_ERROR_FILE, a JSON {"message", "timestamp"} that torchrun reads back as
  ProcessFailure.message) and prints nothing (EVACLIP_PARENT_REPORTS_ERRORS, set here);
- this process prints that line once (the lowest rank's) and exits with the rank's code: 2 for bad
  input (the trainer's documented code), 1 for a runtime failure;
- a rank that died without a line (a crash: its traceback is above; a signal) gives one line naming
  the rank and its exit code, exit 1; ranks that all stopped on preemption (143) exit 143 silently.

`evaplan train --nproc-per-node N` runs this; torchrun itself (as in the rendered Kubernetes jobs)
still works with the trainer and shows the same line in its failure table.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Mapping
from typing import Any

PARENT_REPORTS_ERRORS = "EVACLIP_PARENT_REPORTS_ERRORS"
EXIT_BAD_INPUT, EXIT_FAILED, EXIT_PREEMPTED = 2, 1, 143


def report_rank_error(line: str) -> None:
    """A rank's one `error:` line: into torchrun's error file when it gave one; on stderr unless the
    launcher that started the ranks prints it."""
    path = os.environ.get("TORCHELASTIC_ERROR_FILE")
    if path:
        try:
            with open(path, "w", encoding="utf-8") as f:
                json.dump({"message": line, "timestamp": int(time.time())}, f)
        except OSError:
            path = None  # the parent cannot read it: say it here
    if not path or os.environ.get(PARENT_REPORTS_ERRORS) != "1":
        print(f"error: {line}", file=sys.stderr, flush=True)


def failure_line(failures: Mapping[int, Any]) -> tuple[str | None, int]:
    """(line to print, exit code) for torchrun's {global rank: ProcessFailure}."""
    ranks = sorted(failures)
    for code in (EXIT_BAD_INPUT, EXIT_FAILED):
        for rank in ranks:
            f = failures[rank]
            if f.exitcode == code and isinstance(f.message, str) and f.error_file_data.get("message"):
                return f.message, code
    if all(failures[r].exitcode == EXIT_PREEMPTED for r in ranks):
        return None, EXIT_PREEMPTED
    rank = min(ranks, key=lambda r: (failures[r].timestamp, r))  # the first to fail
    f = failures[rank]
    how = f"signal {f.signal_name()}" if f.exitcode < 0 else f"exit code {f.exitcode}"
    return f"the trainer's rank {rank} stopped with {how} (see its output above)", EXIT_FAILED


def _quiet_agent_logs() -> None:
    """torchrun's agent logs each failure (and the SIGTERM it sends the other ranks) before raising;
    the one line below says it. LOGLEVEL set by the user keeps them."""
    if "LOGLEVEL" in os.environ:
        return
    for name in list(logging.Logger.manager.loggerDict):
        if name.startswith("torch.distributed.elastic"):
            logging.getLogger(name).setLevel(logging.CRITICAL)


def main(argv: list[str] | None = None) -> int:
    import runpy

    import torch.distributed.launcher.api  # noqa: F401  # loads the agent's loggers, quieted below
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

    os.environ[PARENT_REPORTS_ERRORS] = "1"
    _quiet_agent_logs()
    # Run as `python -m torch.distributed.run` is run (its own __main__, so its output is torchrun's).
    sys.argv = ["torchrun", *(sys.argv[1:] if argv is None else argv)]
    try:
        runpy.run_module("torch.distributed.run", run_name="__main__", alter_sys=True)
    except ChildFailedError as e:
        line, code = failure_line(e.failures)
        if line:
            print(f"error: {line}", file=sys.stderr, flush=True)
        return code
    except SignalException as e:  # torchrun itself was signalled; it stopped the ranks
        return 128 + int(e.sigval)
    return 0


if __name__ == "__main__":
    sys.exit(main())
