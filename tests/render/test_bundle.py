"""Bundles: written atomically and deterministically, read back with parsed manifests."""

from __future__ import annotations

import json

import pytest

from evaclip.config import RunConfig
from launcher.bundle import META_FILE, Bundle, BundleReadError, read_bundle, write_bundle
from launcher.render import render
from planner.errors import EvaplanError


def test_write_then_read(tmp_path, make_inputs, make_options):
    r = render(make_inputs("mi300x"), make_options(flavor="jobset"))
    out = write_bundle(r, tmp_path / "b")
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["ds_config.json", "run_config.json", "manifests.yaml", "plan.json", "rbac.yaml", META_FILE]
    )
    b = read_bundle(out)
    assert isinstance(b, Bundle) and isinstance(b.run_config, RunConfig)
    assert (b.job_name, b.namespace, b.flavor) == ("eva8b-run1", "ml", "jobset")
    assert b.selector == "evaplan.io/job=eva8b-run1"
    assert [m["kind"] for m in b.manifests] == ["ConfigMap", "JobSet"] and b.workload["kind"] == "JobSet"
    assert b.ds_config["train_batch_size"] == 32 * 2 * 32
    assert b.plan == json.loads(r.files["plan.json"])


def test_same_inputs_same_bytes(tmp_path, make_inputs, make_options):
    a = write_bundle(render(make_inputs(), make_options()), tmp_path / "a")
    b = write_bundle(render(make_inputs(), make_options()), tmp_path / "b")
    for f in a.iterdir():
        assert f.read_bytes() == (b / f.name).read_bytes(), f.name


def test_rewrite_replaces_a_bundle_but_not_other_folders(tmp_path, make_inputs, make_options):
    out = tmp_path / "b"
    write_bundle(render(make_inputs(), make_options(flavor="jobset")), out)
    write_bundle(render(make_inputs(), make_options(flavor="pytorchjob")), out)
    assert read_bundle(out).flavor == "pytorchjob"
    assert [p.name for p in tmp_path.iterdir()] == ["b"]  # no temporary folders left behind
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    with pytest.raises(EvaplanError, match="not an evaplan bundle"):
        write_bundle(render(make_inputs(), make_options()), other)
    assert (other / "notes.txt").read_text() == "keep me"


def test_read_refuses_broken_bundles(tmp_path, make_inputs, make_options):
    with pytest.raises(BundleReadError, match="does not exist"):
        read_bundle(tmp_path / "nope")
    out = write_bundle(render(make_inputs(), make_options()), tmp_path / "b")
    (out / "manifests.yaml").write_text("a: [unclosed\n")
    with pytest.raises(BundleReadError, match=r"manifests\.yaml was changed since evaplan rendered it"):
        read_bundle(out)
    (out / "manifests.yaml").unlink()
    with pytest.raises(BundleReadError, match=r"lacks manifests\.yaml"):
        read_bundle(out)


def test_launcher_reads_the_bundle(tmp_path, make_inputs, make_options):
    """The launcher's loader (launcher.backends.base.load_bundle) goes through read_bundle."""
    base = pytest.importorskip("launcher.backends.base")
    out = write_bundle(render(make_inputs(), make_options()), tmp_path / "b")
    b = base.load_bundle(out)
    assert b.job_name == "eva8b-run1" and b.run_config.total_steps > 0
    assert [m["kind"] for m in b.manifests] == ["ConfigMap", "Service", "Job"]
