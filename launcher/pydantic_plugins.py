"""No pydantic plugin for evaplan's commands, and no cost for looking for one (imported for its effect,
by launcher/cli.py, before pydantic builds its first validator).

evaplan uses no pydantic plugin, and pydantic's plugin discovery reads the entry points of every
installed distribution (importlib.metadata, plus the zipfile and email packages it imports) before its
first validator: ~20 ms of each command's start-up here (benchmarks/estimate_speed.py). A user's own
PYDANTIC_DISABLE_PLUGINS, even empty (which lets plugins load), is kept.

Disabled, pydantic's `get_plugins()` returns () before it reads any entry point, but its module
imports importlib.metadata at the top all the same (pydantic 2.13, pydantic/plugin/_loader.py):
another ~30 ms of each command (`python -X importtime`). So while plugins are off, a stand-in that
gives the same answer is registered under that module's name before pydantic imports it.
"""

from __future__ import annotations

import importlib
import os
import sys
import types
from typing import Any

# The values pydantic reads as "every plugin off" (pydantic/plugin/_loader.py, get_plugins).
PLUGINS_OFF = ("__all__", "1", "true")
LOADER = "pydantic.plugin._loader"


def _no_plugins() -> tuple[()]:
    """What pydantic's get_plugins() returns while PYDANTIC_DISABLE_PLUGINS is one of PLUGINS_OFF."""
    return ()


def _real(name: str) -> Any:
    """Any other name a later pydantic asks of its loader: the real module takes the stand-in's place
    (imported then, once) and answers, so a pydantic that grew its loader still works, only without
    the saving."""
    if name.startswith("__"):  # the import system's own questions (__path__, __file__, ...)
        raise AttributeError(name)
    del sys.modules[LOADER]
    real = importlib.import_module(LOADER)
    return getattr(real, name)


def stand_in_loader() -> types.ModuleType:
    loader = types.ModuleType(LOADER, "evaplan's stand-in: plugins are off (launcher/pydantic_plugins.py)")
    loader.get_plugins = _no_plugins  # type: ignore[attr-defined]
    loader.__getattr__ = _real  # type: ignore[attr-defined]  # PEP 562: names the stand-in lacks
    return loader


os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")
if os.environ["PYDANTIC_DISABLE_PLUGINS"] in PLUGINS_OFF and LOADER not in sys.modules:
    sys.modules[LOADER] = stand_in_loader()
