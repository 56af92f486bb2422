"""The bundle: the folder `evaplan render` writes and `evaplan launch` submits (the dry run as an artifact).

Layout (every file is plain text, deterministic, no timestamps):
    ds_config.json   the DeepSpeed config (planner.deepspeed_config.deepspeed_config of the plan)
    run_config.json  the trainer's RunConfig (evaclip/config.py)
    manifests.yaml   Kubernetes objects, multi-document YAML, in creation order
                     (ConfigMap, [headless Service,] Job | PyTorchJob | JobSet)
    plan.json        the planner's Estimate the bundle came from
    rbac.yaml        Role + RoleBinding that `evaplan launch/status/logs/stop` need (for infra
                     teams; never applied by the launcher)
    bundle.json      job name, namespace, flavour and the pod label selector, for the launcher

Every object and every pod carries the label `evaplan.io/job: <job name>`: `pod_selector` is the
selector that finds all pods of the job whatever the flavour.

A bundle is written atomically: into a temporary sibling folder, then renamed over the target, so a
reader never sees half a bundle. An existing target is replaced only if it is itself a bundle.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from evaclip.config import RunConfig
from launcher.manifest_check import DIGEST_FIELD, manifest_digests
from launcher.render import DS_CONFIG_FILE, JOB_LABEL, RUN_CONFIG_FILE, Rendered, pod_selector
from planner.errors import EvaplanError

BUNDLE_FORMAT = 1
META_FILE = "bundle.json"
MANIFESTS_FILE = "manifests.yaml"
PLAN_FILE = "plan.json"
RBAC_FILE = "rbac.yaml"
REQUIRED_FILES = (DS_CONFIG_FILE, RUN_CONFIG_FILE, MANIFESTS_FILE, PLAN_FILE, META_FILE)

__all__ = [
    "JOB_LABEL",
    "Bundle",
    "BundleReadError",
    "pod_selector",
    "pod_templates",
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

    @property
    def workload(self) -> dict[str, Any]:
        """The object that runs the pods (Job, PyTorchJob or JobSet): the last manifest."""
        return self.manifests[-1]


def pod_templates(obj: dict[str, Any]) -> list[dict[str, Any]]:
    """Every pod template embedded in a workload object (Job, PyTorchJob, JobSet); [] for others."""
    kind, spec = obj.get("kind"), obj.get("spec") or {}
    if kind == "Job":
        return [spec["template"]]
    if kind == "PyTorchJob":
        return [r["template"] for r in spec["pytorchReplicaSpecs"].values()]
    if kind == "JobSet":
        return [rj["template"]["spec"]["template"] for rj in spec["replicatedJobs"]]
    return []


def _meta(rendered: Rendered) -> dict[str, Any]:
    return {
        "format": BUNDLE_FORMAT,
        "job_name": rendered.job_name,
        "namespace": rendered.namespace,
        "flavor": rendered.flavor,
        "selector": pod_selector(rendered.job_name),
        "files": sorted([*rendered.files, META_FILE]),
        DIGEST_FIELD: manifest_digests(rendered.files[MANIFESTS_FILE]),
    }


def bundle_files(rendered: Rendered) -> dict[str, str]:
    """Every file of the bundle, name → text, including bundle.json."""
    files = dict(rendered.files)
    files[META_FILE] = json.dumps(_meta(rendered), indent=2, sort_keys=True) + "\n"
    return dict(sorted(files.items()))


def write_bundle(rendered: Rendered, out_dir: str | Path) -> Path:
    """Write the bundle into `out_dir` atomically; returns the folder."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise EvaplanError(f"{out} exists and is not a folder", hint="choose another -o folder")
    if out.is_dir() and any(out.iterdir()) and not (out / META_FILE).is_file():
        raise EvaplanError(
            f"{out} is a non-empty folder that is not an evaplan bundle",
            hint="choose an empty or new -o folder; evaplan only replaces its own bundles",
        )
    parent = out.resolve().parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=parent))
    except OSError as e:
        raise EvaplanError(
            f"cannot create {out}: {e.strerror}", hint="check the path and its permissions"
        ) from None
    try:
        for name, text in bundle_files(rendered).items():
            (tmp / name).write_text(text, encoding="utf-8")
        os.chmod(tmp, 0o755)  # mkdtemp makes 0700; a bundle is shared like any output folder
        if out.is_dir():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old.", dir=parent))
            os.rename(out, old / "bundle")
            os.rename(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, out)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise EvaplanError(
            f"cannot write the bundle to {out}: {e.strerror}", hint="check free space and permissions"
        ) from None
    return out


def read_bundle(path: str | Path) -> Bundle:
    """Read and check a bundle folder written by `write_bundle`."""
    p = Path(path)
    if not p.is_dir():
        raise BundleReadError(
            f"bundle folder {p} does not exist", hint="make one with `evaplan render ... -o DIR`"
        )
    missing = [n for n in REQUIRED_FILES if not (p / n).is_file()]
    if missing:
        raise BundleReadError(
            f"bundle {p} lacks {', '.join(missing)}", hint="re-render it with `evaplan render`"
        )

    def load_json(name: str) -> Any:
        try:
            return json.loads((p / name).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise BundleReadError(f"bundle {p}: {name} is unreadable ({e})", hint="re-render it") from None

    meta = load_json(META_FILE)
    if not isinstance(meta, dict) or meta.get("format") != BUNDLE_FORMAT:
        raise BundleReadError(
            f"bundle {p}: {META_FILE} is not format {BUNDLE_FORMAT}",
            hint="re-render it with this version of evaplan",
        )
    try:
        run_config = RunConfig.model_validate(load_json(RUN_CONFIG_FILE))
    except ValidationError as e:
        first = e.errors()[0]
        loc = ".".join(str(x) for x in first.get("loc", ()))
        raise BundleReadError(
            f"bundle {p}: {RUN_CONFIG_FILE}: {loc}: {first.get('msg')}", hint="re-render it"
        ) from None
    try:
        manifests = [d for d in yaml.safe_load_all((p / MANIFESTS_FILE).read_text(encoding="utf-8")) if d]
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise BundleReadError(
            f"bundle {p}: {MANIFESTS_FILE} is unreadable ({e})", hint="re-render it"
        ) from None
    if not manifests or not all(isinstance(d, dict) and "kind" in d for d in manifests):
        raise BundleReadError(
            f"bundle {p}: {MANIFESTS_FILE} holds no Kubernetes objects", hint="re-render it"
        )
    ds_config, plan = load_json(DS_CONFIG_FILE), load_json(PLAN_FILE)
    job_name = str(meta.get("job_name"))
    if run_config.job_name != job_name:
        raise BundleReadError(
            f"bundle {p}: {META_FILE} names job {job_name!r} but {RUN_CONFIG_FILE} "
            f"names {run_config.job_name!r}",
            hint="re-render it; do not edit bundle files by hand",
        )
    return Bundle(
        path=p,
        job_name=job_name,
        namespace=str(meta["namespace"]),
        flavor=str(meta["flavor"]),
        selector=str(meta["selector"]),
        ds_config=ds_config,
        run_config=run_config,
        manifests=manifests,
        plan=plan,
        object_digests=[str(d) for d in meta[DIGEST_FIELD]]
        if isinstance(meta.get(DIGEST_FIELD), list)
        else None,
    )
