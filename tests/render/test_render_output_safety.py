"""`render -o DIR` overwrites nothing it did not write: into a non-empty folder only when every
entry there is a file of an earlier bundle, unchanged (bundle.json lists them with their sha256);
then exactly those files are replaced and nothing else is touched."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from launcher.bundle import FILE_DIGESTS_KEY, META_FILE, read_bundle, write_bundle
from launcher.render import render
from planner.errors import EvaplanError

FLAGS = ["--model", "eva-clip-debug", "--hardware", "mi300x", "--gpus", "16", "--image", "evaclip:dev"]


def _snapshot(d: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(d.iterdir())}


def test_bundle_json_lists_every_file_it_wrote_with_its_digest(tmp_path, make_inputs, make_options):
    out = write_bundle(render(make_inputs(), make_options()), tmp_path / "b")
    meta = json.loads((out / META_FILE).read_text())
    digests = meta[FILE_DIGESTS_KEY]
    assert set(digests) == {p.name for p in out.iterdir()} - {META_FILE}
    for name, digest in digests.items():
        assert hashlib.sha256((out / name).read_bytes()).hexdigest() == digest


@pytest.mark.parametrize(
    "meta",
    [
        "{}",
        json.dumps({"format": 1, "job_name": "x", "files": ["notes.txt"]}),  # a bundle.json without digests
        "not json",
    ],
    ids=["empty-object", "foreign", "garbage"],
)
def test_a_folder_with_a_foreign_bundle_json_is_refused_and_untouched(cli, tmp_path, meta):
    out = tmp_path / "mine"
    out.mkdir()
    (out / META_FILE).write_text(meta)
    (out / "notes.txt").write_text("keep me")
    before = _snapshot(out)
    r = cli("render", *FLAGS, "-o", str(out))
    assert r.exit_code == 2, r.output
    errors = [x for x in r.output.splitlines() if x.startswith("error: ")]
    assert len(errors) == 1 and "not an evaplan bundle" in errors[0]
    assert _snapshot(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"]  # no temporary folder left


def test_a_stranger_in_an_earlier_bundle_refuses_the_rewrite(cli, tmp_path):
    out = tmp_path / "b"
    assert cli("render", *FLAGS, "-o", str(out)).exit_code == 0
    (out / "my-notes.md").write_text("mine")
    before = _snapshot(out)
    r = cli("render", *FLAGS, "--flavor", "jobset", "-o", str(out))
    assert r.exit_code == 2 and "my-notes.md was not written by the evaplan bundle" in r.output
    assert _snapshot(out) == before
    (out / "my-notes.md").unlink()
    (out / "sub").mkdir()
    r = cli("render", *FLAGS, "--flavor", "jobset", "-o", str(out))
    assert r.exit_code == 2 and "sub was not written by the evaplan bundle" in r.output


def test_a_hand_edited_file_is_not_overwritten(cli, tmp_path):
    out = tmp_path / "b"
    assert cli("render", *FLAGS, "-o", str(out)).exit_code == 0
    ds = out / "ds_config.json"
    ds.write_text(ds.read_text().replace('"train_batch_size"', '"train_batch_size" ', 1))
    before = _snapshot(out)
    r = cli("render", *FLAGS, "--flavor", "jobset", "-o", str(out))
    assert r.exit_code == 2 and "ds_config.json was changed since evaplan wrote it" in r.output
    assert _snapshot(out) == before


def test_an_earlier_bundle_is_replaced_exactly(tmp_path, make_inputs, make_options):
    out = write_bundle(render(make_inputs(), make_options(flavor="jobset")), tmp_path / "b")
    # A file the earlier bundle wrote that the new one does not: it goes, and only it.
    (out / "old-extra.yaml").write_text("x: 1\n")
    meta = json.loads((out / META_FILE).read_text())
    meta[FILE_DIGESTS_KEY]["old-extra.yaml"] = hashlib.sha256(b"x: 1\n").hexdigest()
    (out / META_FILE).write_text(json.dumps(meta))
    inode = out.stat().st_ino
    new = render(make_inputs(), make_options(flavor="pytorchjob"))
    write_bundle(new, out)
    assert out.stat().st_ino == inode  # the folder itself stays (it may be someone's cwd)
    assert read_bundle(out).flavor == "pytorchjob"
    assert sorted(p.name for p in out.iterdir()) == sorted([*new.files, META_FILE])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"]


def test_an_empty_folder_is_written_in_place(tmp_path, make_inputs, make_options):
    out = tmp_path / "empty"
    out.mkdir()
    write_bundle(render(make_inputs(), make_options()), out)
    assert read_bundle(out).job_name == "eva8b-run1"


def test_a_symlink_in_the_folder_is_a_stranger(tmp_path, make_inputs, make_options):
    out = write_bundle(render(make_inputs(), make_options()), tmp_path / "b")
    target = tmp_path / "precious.json"
    target.write_text("{}")
    (out / "plan.json").unlink()
    (out / "plan.json").symlink_to(target)
    with pytest.raises(EvaplanError, match=r"plan\.json was not written"):
        write_bundle(render(make_inputs(), make_options()), out)
    assert target.read_text() == "{}"
