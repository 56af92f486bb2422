"""The bundle: the folder `evaplan render` writes and `evaplan launch` submits (the dry run as an artifact).

Layout (every file is plain text, deterministic, no timestamps):
    ds_config.json   the DeepSpeed config (planner.deepspeed_config.deepspeed_config of the plan)
    job.sbatch       (slurm flavour, instead of manifests.yaml and rbac.yaml) the batch script
    run_config.json  the trainer's RunConfig (evaclip/config.py)
    manifests.yaml   Kubernetes objects, multi-document YAML, in creation order
                     (ConfigMap, [headless Service,] Job | PyTorchJob | JobSet)
    plan.json        the planner's Estimate the bundle came from
    rbac.yaml        Role + RoleBinding that `evaplan launch/status/logs/stop` need (for infra
                     teams; never applied by the launcher)
    bundle.json      job name, namespace, flavour and the pod label selector, for the launcher

Every object and every pod carries the label `evaplan.io/job: <job name>`: `pod_selector` is the
selector that finds all pods of the job whatever the flavour.

A bundle is written atomically (a temporary folder, then renames; see `write_bundle`). bundle.json
lists every file the bundle wrote with its sha256: an existing folder is written into only when
every entry in it is such a file, unchanged, so `render -o` never overwrites or deletes what it did
not write. bundle.json is signed with a key kept in the user's job store (launcher/bundle_key.py
explains the threat model): a bundle edited together with its recomputed digests, or rendered with
another store's key, is refused. bundle.json also records what every pod was rendered with (the pod
promise, launcher/pod_policy.py) and the user's --env entries (for local runs); the files that
carry --env values are written 0600.

A bundle is untrusted on read: `read_bundle` reads each file once and never through a symbolic
link, checks the signature and digests before parsing, quotes no file's content in its errors,
checks its names (names.py rules), and the local backend confines its paths to the job's folder.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from evaclip.config import RunConfig
from launcher import bundle_key, names
from launcher.env_policy import check_env_entry
from launcher.manifest_check import DIGEST_FIELD, manifest_digests
from launcher.pod_policy import PodPromise
from launcher.render import DS_CONFIG_FILE, JOB_LABEL, RUN_CONFIG_FILE, Rendered, pod_selector
from launcher.render_options import SLURM_FLAVOR
from launcher.slurm_script import SCRIPT_FILE
from planner.errors import EvaplanError

BUNDLE_FORMAT = 1
META_FILE = "bundle.json"
FILE_DIGESTS_KEY = "file_sha256"
MANIFESTS_FILE = "manifests.yaml"
PLAN_FILE = "plan.json"
RBAC_FILE = "rbac.yaml"
REQUIRED_FILES = (DS_CONFIG_FILE, RUN_CONFIG_FILE, MANIFESTS_FILE, PLAN_FILE, META_FILE)
# A slurm bundle holds the batch script instead of manifests (launcher/slurm_script.py).
SLURM_REQUIRED_FILES = (DS_CONFIG_FILE, RUN_CONFIG_FILE, SCRIPT_FILE, PLAN_FILE, META_FILE)
# Every file a bundle holds besides bundle.json, which lists them with their sha256.
RENDERED_FILES = frozenset({DS_CONFIG_FILE, RUN_CONFIG_FILE, MANIFESTS_FILE, PLAN_FILE, RBAC_FILE})
SLURM_RENDERED_FILES = frozenset({DS_CONFIG_FILE, RUN_CONFIG_FILE, SCRIPT_FILE, PLAN_FILE})
PROMISE_KEY = "pod_promise"
ENV_KEY = "env"
NOT_SECRET_KEY = "env_not_secret"
# The most a bundle file may hold (a real one is well under 1 MiB: the ConfigMap limit).
MAX_FILE_BYTES = 16 * 1024 * 1024

__all__ = [
    "JOB_LABEL",
    "SLURM_FLAVOR",
    "Bundle",
    "BundleReadError",
    "pod_selector",
    "read_bundle",
    "write_bundle",
]


class BundleReadError(EvaplanError):
    """A folder that is not a readable bundle."""


@dataclass(frozen=True)
class Bundle:
    """A bundle read back: parsed files plus what the launcher needs to find the job again."""

    path: Path
    job_name: str
    namespace: str
    flavor: str
    selector: str  # label selector of every pod of the job: evaplan.io/job=<name>
    ds_config: dict[str, Any]
    run_config: RunConfig
    manifests: list[dict[str, Any]]  # in creation order
    plan: dict[str, Any]  # the Estimate as JSON
    # sha256 of each object as rendered (launcher/manifest_check.py); None: an older bundle
    object_digests: list[str] | None = None
    script: str | None = None  # job.sbatch of a slurm bundle (its manifests are then [])
    # What every pod was rendered with (launcher/pod_policy.py); None: an older bundle
    pod_promise: PodPromise | None = None
    env: tuple[tuple[str, str], ...] = ()  # the user's --env, for the ranks of a local run

    @property
    def workload(self) -> dict[str, Any]:
        """The object that runs the pods (Job, PyTorchJob or JobSet): the last manifest."""
        return self.manifests[-1]


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _meta(rendered: Rendered) -> dict[str, Any]:
    """bundle.json, signed with the job store's key (launcher/bundle_key.py)."""
    meta = {
        "format": BUNDLE_FORMAT,
        "job_name": rendered.job_name,
        "namespace": rendered.namespace,
        "flavor": rendered.flavor,
        "selector": pod_selector(rendered.job_name),
        "files": sorted([*rendered.files, META_FILE]),
        DIGEST_FIELD: manifest_digests(rendered.files[MANIFESTS_FILE])
        if MANIFESTS_FILE in rendered.files
        else [],
        # What this bundle wrote, so that a later `render -o` replaces exactly these files and
        # only while they are as written (bundle.json itself is not listed: it holds the list).
        FILE_DIGESTS_KEY: {
            name: _sha256(text.encode("utf-8")) for name, text in sorted(rendered.files.items())
        },
        PROMISE_KEY: PodPromise.from_pod(rendered.pod).to_json() if rendered.pod else None,
        ENV_KEY: [list(kv) for kv in rendered.env],
        NOT_SECRET_KEY: list(rendered.env_not_secret),
    }
    return bundle_key.sign(meta)


def _mode(rendered: Rendered, name: str) -> int:
    """0600 for the files that carry --env values (the manifests and bundle.json), when there are
    any: a value may be sensitive although it passed the secret checks; 0644 otherwise (a bundle is
    shared like any output folder)."""
    return 0o600 if rendered.env and name in (MANIFESTS_FILE, META_FILE) else 0o644


def bundle_files(rendered: Rendered) -> dict[str, str]:
    """Every file of the bundle, name → text, including bundle.json."""
    files = dict(rendered.files)
    files[META_FILE] = json.dumps(_meta(rendered), indent=2, sort_keys=True) + "\n"
    return dict(sorted(files.items()))


def _owned_files(out: Path) -> set[str]:
    """The files of the earlier bundle in `out` that a new bundle may replace: all of `out`'s
    entries, each written by that bundle and unchanged since. Anything else refuses the write
    (one line naming the first stranger), so `render -o` never deletes what it did not write."""
    entries = sorted(p.name for p in out.iterdir())
    if not entries:
        return set()
    refuse = "choose an empty or new -o folder; evaplan only replaces files of its own bundles"
    meta_path = out / META_FILE
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8")) if meta_path.is_file() else None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        meta = None
    digests = meta.get(FILE_DIGESTS_KEY) if isinstance(meta, dict) else None
    if not (
        isinstance(meta, dict)
        and meta.get("format") == BUNDLE_FORMAT
        and isinstance(digests, dict)
        and digests
        and all(isinstance(k, str) and isinstance(v, str) for k, v in digests.items())
    ):
        raise EvaplanError(
            f"{out} is a non-empty folder that is not an evaplan bundle (no {META_FILE} listing the "
            "files it wrote and their digests)",
            hint=refuse,
        )
    for name in entries:
        if name == META_FILE:
            continue
        p = out / name
        if name not in digests or p.is_symlink() or not p.is_file():
            raise EvaplanError(f"{p} was not written by the evaplan bundle in {out}", hint=refuse)
        try:
            same = _sha256(p.read_bytes()) == digests[name]
        except OSError as e:
            raise EvaplanError(f"cannot read {p}: {e.strerror}", hint=refuse) from None
        if not same:
            raise EvaplanError(
                f"{p} was changed since evaplan wrote it", hint="move your edits elsewhere, or " + refuse
            )
    return set(entries)


def write_bundle(rendered: Rendered, out_dir: str | Path) -> Path:
    """Write the bundle into `out_dir` atomically; returns the folder.

    A new folder is written as a temporary sibling and renamed into place. Into an existing
    folder (empty, or holding an earlier bundle whose files are all unchanged) the files are
    written into a temporary folder inside it and each renamed over its namesake (bundle.json, the
    list, last); files of the earlier bundle that the new one does not write are then removed.
    Nothing else in the folder is touched: any other entry refuses the write.
    """
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise EvaplanError(f"{out} exists and is not a folder", hint="choose another -o folder")
    files = bundle_files(rendered)
    if out.is_dir():
        try:
            old = _owned_files(out)
        except OSError as e:
            raise EvaplanError(f"cannot read {out}: {e.strerror}", hint="check its permissions") from None
        return _replace_in_place(out, files, old, rendered)
    parent = out.absolute().parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=parent))
    except OSError as e:
        raise EvaplanError(
            f"cannot create {out}: {e.strerror}", hint="check the path and its permissions"
        ) from None
    try:
        for name, text in files.items():
            _write_synced(tmp / name, text, _mode(rendered, name))
        os.chmod(tmp, 0o755)  # mkdtemp makes 0700; a bundle is shared like any output folder
        os.rename(tmp, out)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise EvaplanError(
            f"cannot write the bundle to {out}: {e.strerror}", hint="check free space and permissions"
        ) from None
    return out


def _write_synced(path: Path, text: str, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.chmod(path, mode)


def _replace_in_place(out: Path, files: dict[str, str], old: set[str], rendered: Rendered) -> Path:
    try:
        tmp = Path(tempfile.mkdtemp(prefix=".evaplan-render.", dir=out))
    except OSError as e:
        raise EvaplanError(f"cannot write into {out}: {e.strerror}", hint="check its permissions") from None
    try:
        for name, text in files.items():
            _write_synced(tmp / name, text, _mode(rendered, name))
        # Every file is complete on disk before the first rename; bundle.json goes last so that
        # a reader never sees a list that names files not yet in place.
        for name in sorted(files, key=lambda n: n == META_FILE):
            os.replace(tmp / name, out / name)
        for name in sorted(old - set(files)):
            (out / name).unlink(missing_ok=True)
    except OSError as e:
        raise EvaplanError(
            f"cannot write the bundle to {out}: {e.strerror}", hint="check free space and permissions"
        ) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def _read_file(p: Path, name: str) -> bytes:
    """A bundle file's bytes, read once: a regular file in the folder itself, never through a
    symbolic link (which could lead anywhere, e.g. to a credentials file). Errors name the path,
    never the content."""
    path = p / name
    refuse = "a bundle holds only the files evaplan wrote; re-render it with `evaplan render`"
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise BundleReadError(f"bundle {p} lacks {name}", hint="re-render it with `evaplan render`") from None
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise BundleReadError(f"bundle file {path} is a symbolic link", hint=refuse) from None
        raise BundleReadError(f"cannot read {path}: {e.strerror}", hint="check its permissions") from None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise BundleReadError(f"bundle file {path} is not a regular file", hint=refuse)
        if st.st_size > MAX_FILE_BYTES:
            raise BundleReadError(f"bundle file {path} is larger than evaplan writes", hint=refuse)
        try:
            return f.read(MAX_FILE_BYTES + 1)
        except OSError as e:
            raise BundleReadError(f"cannot read {path}: {e.strerror}", hint="check its permissions") from None


def _text(p: Path, name: str, data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise BundleReadError(
            f"bundle {p}: {name} is not UTF-8 text (byte {e.start})", hint="re-render it"
        ) from None


def _json(p: Path, name: str, data: bytes) -> Any:
    try:
        return json.loads(_text(p, name, data))
    except json.JSONDecodeError as e:  # e.msg is the parser's own words; e.doc (the text) is not shown
        raise BundleReadError(
            f"bundle {p}: {name} is not valid JSON ({e.msg} at line {e.lineno}, column {e.colno})",
            hint="re-render it",
        ) from None


def _yaml_objects(p: Path, name: str, data: bytes) -> list[Any]:
    try:
        return [d for d in yaml.safe_load_all(_text(p, name, data)) if d]
    except yaml.YAMLError as e:  # its text quotes the offending line: only its position is shown
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        raise BundleReadError(f"bundle {p}: {name} is not valid YAML{where}", hint="re-render it") from None


def _check_origin(p: Path, meta: Any, raw: dict[str, bytes], rendered_files: frozenset[str]) -> None:
    """bundle.json is signed with this job store's key and every file is the one it lists."""
    if not isinstance(meta, dict) or meta.get("format") != BUNDLE_FORMAT:
        raise BundleReadError(
            f"bundle {p}: {META_FILE} is not format {BUNDLE_FORMAT}",
            hint="re-render it with this version of evaplan",
        )
    bundle_key.verify(meta, str(p))
    digests = meta.get(FILE_DIGESTS_KEY)
    if not isinstance(digests, dict) or set(digests) != rendered_files:
        raise BundleReadError(
            f"bundle {p}: {META_FILE} does not list the files evaplan writes", hint="re-render it"
        )
    for name in sorted(rendered_files):
        if name not in raw:
            raw[name] = _read_file(p, name)
        if _sha256(raw[name]) != digests[name]:
            raise BundleReadError(
                f"bundle {p}: {name} was changed since evaplan rendered it (sha256 mismatch)",
                hint="re-render it; do not edit bundle files by hand",
            )


def _user_env(p: Path, meta: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    """The --env entries, checked again as on the command line (names, reserved, secrets)."""
    entries, vouched = meta.get(ENV_KEY, []), meta.get(NOT_SECRET_KEY, [])
    ok = isinstance(entries, list) and isinstance(vouched, list)
    ok = ok and all(
        isinstance(e, list) and len(e) == 2 and all(isinstance(x, str) for x in e) for e in entries
    )
    if not ok:
        raise BundleReadError(f"bundle {p}: {META_FILE} has a malformed {ENV_KEY}", hint="re-render it")
    try:
        for key, value in entries:
            names.check_env_name(key, "--env name")
            check_env_entry(key, value, not_secret=key in vouched)
    except EvaplanError as e:
        raise BundleReadError(f"bundle {p}: {e.message}", hint="re-render it with `evaplan render`") from None
    return tuple((k, v) for k, v in entries)


def read_bundle(path: str | Path) -> Bundle:
    """Read and check a bundle folder written by `write_bundle`: each file read once, never through
    a link; bundle.json's signature (launcher/bundle_key.py) and every file's sha256 checked before
    anything else is parsed; no message quotes a file's content."""
    p = Path(path)
    if not p.is_dir():
        raise BundleReadError(
            f"bundle folder {p} does not exist", hint="make one with `evaplan render ... -o DIR`"
        )
    if not os.path.lexists(p / META_FILE):
        raise BundleReadError(f"bundle {p} lacks {META_FILE}", hint="re-render it with `evaplan render`")
    raw = {META_FILE: _read_file(p, META_FILE)}
    meta = _json(p, META_FILE, raw[META_FILE])
    # The flavour read here is trusted only once _check_origin has verified bundle.json's signature.
    slurm = isinstance(meta, dict) and meta.get("flavor") == SLURM_FLAVOR
    required = SLURM_REQUIRED_FILES if slurm else REQUIRED_FILES
    missing = [n for n in required if not os.path.lexists(p / n)]
    if missing:
        raise BundleReadError(
            f"bundle {p} lacks {', '.join(missing)}", hint="re-render it with `evaplan render`"
        )
    raw.update({name: _read_file(p, name) for name in required if name != META_FILE})
    _check_origin(p, meta, raw, SLURM_RENDERED_FILES if slurm else RENDERED_FILES)
    try:
        run_config = RunConfig.model_validate(_json(p, RUN_CONFIG_FILE, raw[RUN_CONFIG_FILE]))
    except ValidationError as e:
        first = e.errors()[0]
        loc = ".".join(str(x) for x in first.get("loc", ()))
        what = (
            "holds a field evaplan does not write"
            if first.get("type") == "extra_forbidden"
            else (f"{loc}: {first.get('msg')}")
        )
        raise BundleReadError(f"bundle {p}: {RUN_CONFIG_FILE}: {what}", hint="re-render it") from None
    script = None
    if slurm:
        manifests: list[Any] = []
        script = _text(p, SCRIPT_FILE, raw[SCRIPT_FILE])
    else:
        manifests = _yaml_objects(p, MANIFESTS_FILE, raw[MANIFESTS_FILE])
    if not slurm and (not manifests or not all(isinstance(d, dict) and "kind" in d for d in manifests)):
        raise BundleReadError(
            f"bundle {p}: {MANIFESTS_FILE} holds no Kubernetes objects", hint="re-render it"
        )
    ds_config, plan = _json(p, DS_CONFIG_FILE, raw[DS_CONFIG_FILE]), _json(p, PLAN_FILE, raw[PLAN_FILE])
    job_name, namespace = meta.get("job_name"), meta.get("namespace")
    # Untrusted on read: the job name becomes a folder name and a label, the namespace a URL path.
    try:
        if not isinstance(job_name, str) or not isinstance(namespace, str):
            raise EvaplanError(f"{META_FILE} lacks a text job_name and namespace")
        names.check_dns1035_label(job_name, "job name")
        names.check_dns1123_label(namespace, "namespace")
    except EvaplanError as e:
        raise BundleReadError(f"bundle {p}: {e.message}", hint="re-render it with `evaplan render`") from None
    if not isinstance(ds_config, dict) or not isinstance(plan, dict):
        raise BundleReadError(
            f"bundle {p}: {DS_CONFIG_FILE} and {PLAN_FILE} must hold JSON objects", hint="re-render it"
        )
    if run_config.job_name != job_name:
        raise BundleReadError(
            f"bundle {p}: {META_FILE} names job {job_name!r} but {RUN_CONFIG_FILE} "
            f"names {run_config.job_name!r}",
            hint="re-render it; do not edit bundle files by hand",
        )
    return Bundle(
        path=p,
        job_name=job_name,
        namespace=namespace,
        flavor=str(meta.get("flavor")),
        selector=pod_selector(job_name),  # derived, never read: a crafted selector could match others' pods
        ds_config=ds_config,
        run_config=run_config,
        manifests=manifests,
        plan=plan,
        object_digests=[str(d) for d in meta[DIGEST_FIELD]]
        if isinstance(meta.get(DIGEST_FIELD), list)
        else None,
        script=script,
        # A slurm bundle has no pods: its batch script is checked by the slurm backend.
        pod_promise=None if slurm else PodPromise.from_json(meta.get(PROMISE_KEY), str(p)),
        env=_user_env(p, meta),
    )
