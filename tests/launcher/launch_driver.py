"""`evaplan ARGS...` in a process of its own that pauses right after the local supervisor has
started (before `launch` records the job), so a test can SIGTERM, ^C or SIGKILL a real `launch`
at that moment. The trainer is the stand-in (standin_trainer.py), as in test_local_supervisor.py.

    python launch_driver.py READY_FILE launch BUNDLE --backend local

READY_FILE is written (the supervisor's pid) once the supervisor runs."""

import sys
import time
from pathlib import Path

from launcher.backends import local
from launcher.cli import main

ready = Path(sys.argv[1])
local.TRAINER_ENTRYPOINT = (str(Path(__file__).with_name("standin_trainer.py")),)
start = local.LocalBackend._start_supervisor


def start_then_pause(self, work, launch_id):
    pid = start(self, work, launch_id)
    ready.write_text(f"{pid}\n")
    while True:  # until the test's signal arrives
        time.sleep(3600)


local.LocalBackend._start_supervisor = start_then_pause
sys.argv = ["evaplan", *sys.argv[2:]]
main()
