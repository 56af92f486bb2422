"""`evaplan estimate` loads only what it uses (issue 14, start-up): no torch, DeepSpeed, Kubernetes
client, Jinja2 or boto3, no numpy.ma, and no pydantic validator for a model it never validates.
A profile's alias-free YAML goes through libyaml and reads exactly as the pure-Python loader reads it.
The speed itself is measured by benchmarks/estimate_speed.py, never asserted here."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from planner import profiles as prof

ROOT = Path(__file__).resolve().parents[1]
ARGS = [
    "estimate",
    "--model",
    "eva-clip-18b",
    "--hardware",
    "h100-sxm",
    "--gpus",
    "256",
    "--offering",
    "aws-p5",
]
# Runs the command in a fresh interpreter and reports what it left loaded.
PROBE = """
import contextlib, io, json, sys
exec(sys.argv.pop(1))  # what the test loads before the command (nothing, or a deliberate offender)
sys.argv = ["evaplan", *sys.argv[1:]]
from launcher.cli import main
out = io.StringIO()
try:
    with contextlib.redirect_stdout(out):
        main()
except SystemExit as e:
    code = e.code
from planner import calibration, spec
print(json.dumps({
    "code": code,
    "fits": "fits:" in out.getvalue(),
    "modules": sorted(sys.modules),
    "built": {c.__name__: c.__pydantic_complete__
              for c in (spec.ModelSpec, spec.VisionTower, calibration.CalibrationSpec)},
}))
"""
# difflib: only a mistyped command's "did you mean" needs it. importlib.metadata: pydantic's plugin
# loader imports it even with plugins off (launcher/pydantic_plugins.py), and tabulate for its version.
NOT_ON_THIS_PATH = (
    "torch",
    "deepspeed",
    "kubernetes",
    "jinja2",
    "boto3",
    "numpy.ma",
    "difflib",
    "importlib.metadata",
)


def probe(args: list[str], preload: str = "pass") -> dict:
    r = subprocess.run(
        [sys.executable, "-c", PROBE, preload, *args], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout.splitlines()[-1])


def unused(got: dict) -> list[str]:
    return [m for m in NOT_ON_THIS_PATH if m in set(got["modules"])]


def test_estimate_loads_only_what_it_uses() -> None:
    got = probe(ARGS)
    assert got["code"] in (0, None) and got["fits"]
    assert "numpy" in got["modules"]  # the search that fills unset settings is vectorised
    assert unused(got) == []
    # Validated: the model profile (its towers inside its validator). Never: the calibration.
    assert got["built"] == {"ModelSpec": True, "VisionTower": False, "CalibrationSpec": False}


def test_the_import_check_sees_an_offender() -> None:
    # np.unique of a 1-D array imports numpy.ma (what planner/evaluate.py no longer calls); a
    # validated calibration builds its validator, before launcher.cli: with pydantic's own plugin
    # loader, which imports importlib.metadata.
    offender = (
        "import numpy as np; np.unique(np.arange(3)); from planner.calibration import CalibrationSpec; "
        "CalibrationSpec.model_rebuild(); import difflib"
    )
    got = probe(ARGS, offender)
    assert unused(got) == ["numpy.ma", "difflib", "importlib.metadata"]
    assert got["built"]["CalibrationSpec"] is True


def test_plan_prints_its_tables_without_tabulate() -> None:
    """plan's tables are text and integers (planner.report.simple_table_or_none): tabulate, whose import
    reads importlib.metadata for its own version and loads wcwidth, stays out (issue 23, one offering)."""
    got = probe(["plan", "--model", "eva-clip-18b", "--offering", "aws-p5", "--max-nodes", "24"])
    assert got["code"] == 0
    assert not {"tabulate", "wcwidth", "importlib.metadata"} & set(got["modules"])


BUNDLED = sorted(prof.bundled_dir().rglob("*.yaml"))


@pytest.mark.skipif(not hasattr(yaml, "CSafeLoader"), reason="PyYAML built without libyaml")
@pytest.mark.parametrize("path", BUNDLED, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_libyaml_reads_every_bundled_profile_as_the_pure_loader(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    assert "*" not in text or path.parent.name not in ("models", "hardware", "offerings")
    assert yaml.load(text, Loader=yaml.CSafeLoader) == yaml.load(text, Loader=prof._LimitedLoader)


def test_texts_with_an_alias_or_an_error_take_the_pure_loader() -> None:
    # An alias is counted (the fast path would not count it).
    with pytest.raises(prof._TooManyAliases):
        prof._load_yaml("a: &x 1\n" + "".join(f"b{i}: *x\n" for i in range(prof.MAX_YAML_ALIASES + 1)))
    assert prof._load_yaml("a: &x 1\nb: *x\n") == {"a": 1, "b": 1}
    # A '*' in a quote is no alias: such a text (the published-runs file's quotes) stays on libyaml.
    if hasattr(yaml, "CSafeLoader"):
        assert prof._aliases_within_limit('q: "2 * 3 = 6"\n')
        assert not prof._aliases_within_limit(
            "a: &x 1\n" + "".join(f"b{i}: *x\n" for i in range(prof.MAX_YAML_ALIASES + 1))
        )
    # A syntax error carries the pure-Python parser's message and mark, whichever parser saw it first.
    bad = "a: [1, 2\nb: 3\n"
    with pytest.raises(yaml.YAMLError) as fast:
        prof._load_yaml(bad)
    with pytest.raises(yaml.YAMLError) as pure:
        yaml.load(bad, Loader=prof._LimitedLoader)
    assert str(fast.value) == str(pure.value)


def test_pydantic_plugin_discovery_is_off_unless_the_user_asks() -> None:
    # The CLI turns pydantic's plugin scan off (start-up) but keeps a value the user set.
    script = "import os, launcher.cli; print(os.environ['PYDANTIC_DISABLE_PLUGINS'])"
    for given, kept in ((None, "__all__"), ("", ""), ("some_plugin", "some_plugin")):
        env = {k: v for k, v in os.environ.items() if k != "PYDANTIC_DISABLE_PLUGINS"}
        if given is not None:
            env["PYDANTIC_DISABLE_PLUGINS"] = given
        r = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        assert r.stdout.strip() == kept


def test_a_name_the_plugin_stand_in_lacks_comes_from_pydantics_own_loader() -> None:
    # launcher/pydantic_plugins.py stands in for pydantic's loader while plugins are off; a pydantic
    # whose code asks that module for another name must still get it (the real module, then).
    script = (
        "import sys, launcher.cli\n"
        "from pydantic.plugin._loader import _loading_plugins\n"
        "from pydantic import BaseModel\n"
        "class M(BaseModel):\n    x: int\n"
        "print(M(x=1).x, _loading_plugins, type(sys.modules['pydantic.plugin._loader'].__spec__).__name__)"
    )
    r = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["1", "False", "ModuleSpec"]
