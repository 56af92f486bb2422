"""`evaplan render` end to end: estimate flags or a plan.json in, a bundle out."""

from __future__ import annotations

import json
import subprocess
import sys

import yaml

from launcher.bundle import read_bundle
from planner.estimate import Estimate

FLAGS = ["--model", "eva-clip-debug", "--hardware", "mi300x", "--gpus", "16"]


def test_render_from_flags_then_from_its_plan_gives_the_same_bytes(cli, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    r = cli("render", *FLAGS, "--image", "ghcr.io/acme/evaclip:1.0", "--flavor", "jobset", "-o", str(a))
    assert r.exit_code == 0, r.output
    assert "evaplan.io/job=eva-clip-debug" in r.stdout
    bundle = read_bundle(a)
    est = Estimate.model_validate_json((a / "plan.json").read_text())  # plan.json is the Estimate
    assert est.plan.world_size == 16 and est.model == "eva-clip-debug"
    assert bundle.ds_config["train_batch_size"] == est.plan.global_batch
    assert bundle.run_config.total_steps == -(-int(est.training.samples) // est.plan.global_batch)
    r = cli(
        "render",
        "--plan",
        str(a / "plan.json"),
        "--image",
        "ghcr.io/acme/evaclip:1.0",
        "--flavor",
        "jobset",
        "-o",
        str(b),
    )
    assert r.exit_code == 0, r.output
    for f in a.iterdir():
        assert f.read_bytes() == (b / f.name).read_bytes(), f.name


def test_stdout_is_only_yaml(cli, tmp_path):
    r = cli("render", *FLAGS, "--image", "evaclip:dev", "--stdout", "--job-name", "dbg", "-n", "ml")
    assert r.exit_code == 0, r.output
    docs = list(yaml.safe_load_all(r.stdout))
    assert [d["kind"] for d in docs] == ["ConfigMap", "Service", "Job"]
    assert all(d["metadata"]["namespace"] == "ml" for d in docs)
    assert "terminationGracePeriodSeconds" in r.stderr  # the sizing chain went to stderr


def test_user_errors_are_one_line_exit_2(cli, tmp_path):
    cases = [
        (["render", *FLAGS, "--image", "evaclip:dev"], "nowhere to write"),
        (["render", *FLAGS, "--image", "evaclip:dev", "--stdout", "--job-name", "Bad_Name"], "DNS-1035"),
        (["render", *FLAGS, "--image", "evaclip:dev\nkind: Secret", "--stdout"], "image reference"),
        (["render", *FLAGS, "--image", "evaclip:dev", "--stdout", "--env", "NOEQUALS"], "KEY=VALUE"),
        (["render", "--image", "evaclip:dev", "--stdout"], "no plan given"),
        (
            ["render", "--plan", str(tmp_path / "missing.json"), "--image", "x", "--stdout"],
            "cannot read --plan",
        ),
    ]
    for args, message in cases:
        r = cli(*args)
        assert r.exit_code == 2, (args, r.output)
        assert r.stderr.startswith("error: ") and message in r.stderr and r.stderr.count("\n") == 1, r.stderr
    (tmp_path / "p.json").write_text(json.dumps({"model": "x"}))
    r = cli("render", "--plan", str(tmp_path / "p.json"), "--image", "x", "--stdout", "--gpus", "8")
    assert r.exit_code == 2 and "--gpus" in r.stderr


def test_render_imports_no_heavy_dependencies(tmp_path):
    code = (
        "import sys; from launcher.cli import main\n"
        "try:\n"
        f"    main(['render', {', '.join(map(repr, FLAGS))}, '--image', 'x', '-o', {str(tmp_path / 'b')!r}])\n"
        "except SystemExit as e:\n"
        "    assert e.code in (0, None), e.code\n"
        "heavy = [m for m in ('torch', 'deepspeed', 'kubernetes') if m in sys.modules]\n"
        "print(heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stderr
