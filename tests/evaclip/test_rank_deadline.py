"""The ranks' own stop time (evaclip/trainer.py STOP_AT_ENV): the local supervisor sets it from the
budget, and the trainer stops at it as on SIGTERM (checkpoint, exit 143) when nothing above the
ranks is left to stop them."""

from __future__ import annotations

import pytest

pytest.importorskip("torch")
pytest.importorskip("deepspeed")

from evaclip import trainer
from launcher.backends import local_supervisor


def test_the_supervisor_and_the_trainer_name_one_variable():
    assert local_supervisor.STOP_AT_ENV == trainer.STOP_AT_ENV


@pytest.mark.parametrize(
    ("raw", "want"),
    [(None, None), ("", None), ("1700000000.5", 1700000000.5), ("soon", None), ("nan", None), ("inf", None)],
)
def test_stop_at_from_env(raw, want):
    environ = {} if raw is None else {trainer.STOP_AT_ENV: raw}
    assert trainer.stop_at_from_env(environ) == want


def test_the_stop_time_asks_for_a_stop_like_sigterm():
    p = trainer.Preemption(control_group=None, stop_at=100.0)
    assert not p.stop_wanted(99.9)
    assert p.stop_wanted(100.0)
    assert trainer.Preemption(control_group=None, stop_at=None).stop_wanted(1e12) is False
    p = trainer.Preemption(control_group=None)
    p._handler(15, None)  # SIGTERM
    assert p.stop_wanted(0.0)
