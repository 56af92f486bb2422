"""Submit only what evaplan rendered: object digests, and the checks `launch` runs on a bundle.

`render` records, in bundle.json, the sha256 of each object of manifests.yaml (`object_digest`:
canonical JSON of the parsed object, so re-indenting the YAML changes nothing while any change of
a value does). `launch` refuses a bundle whose objects differ from their digests, hold a kind
evaplan does not render, live outside the job's namespace or lack the job's label. Digests prove
consistency only (anyone who edits manifests.yaml can recompute them): origin is proved by the
bundle's signature (launcher/bundle_key.py, checked when the bundle is read), and every pod is
also held to the restricted policy the templates promise (launcher/pod_policy.py).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import yaml

from launcher.flavours import RENDERED_KINDS
from launcher.pod_policy import ManifestRefused, PodPromise, check_pod_policy
from launcher.render import JOB_LABEL

__all__ = ["DIGEST_FIELD", "OWNER_LABEL", "ManifestRefused", "check_pod_policy", "check_rendered"]

DIGEST_FIELD = "object_digests"
# The label `launch` adds to every object and pod template: the job store's owner id
# (launcher/service.py). With the job label it is how `stop` and `--replace` find what they may delete.
OWNER_LABEL = "evaplan.io/owner"


def object_digest(obj: dict[str, Any]) -> str:
    """sha256 of the object as canonical JSON (sorted keys, no whitespace, UTF-8)."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def manifest_digests(manifests_yaml: str) -> list[str]:
    """The digest of each object of a manifests.yaml text, in file order."""
    return [object_digest(d) for d in yaml.safe_load_all(manifests_yaml) if d]


def _name(obj: dict[str, Any]) -> str:
    return f"{obj.get('kind')}/{(obj.get('metadata') or {}).get('name')}"


def check_rendered(
    manifests: list[dict[str, Any]],
    digests: list[str] | None,
    *,
    job_name: str,
    namespace: str,
    where: str,
    promise: PodPromise | None,
) -> None:
    """Refuse (ManifestRefused) unless `manifests` are exactly what evaplan rendered for this job."""
    fix = "re-render the bundle with `evaplan render`; evaplan submits only what it rendered"
    if digests is None:
        raise ManifestRefused(
            f"bundle {where} records no object digests (rendered by an older evaplan)", hint=fix
        )
    if promise is None:
        raise ManifestRefused(
            f"bundle {where} records no pod promise (rendered by an older evaplan)", hint=fix
        )
    if len(digests) != len(manifests):
        raise ManifestRefused(
            f"bundle {where}: manifests.yaml holds {len(manifests)} objects but evaplan rendered {len(digests)}",
            hint=fix,
        )
    for i, (obj, digest) in enumerate(zip(manifests, digests, strict=True)):
        if (obj.get("apiVersion"), obj.get("kind")) not in RENDERED_KINDS:
            kinds = ", ".join(sorted(k for _, k in RENDERED_KINDS))
            raise ManifestRefused(
                f"bundle {where}: object {i + 1} is a {obj.get('kind')} ({obj.get('apiVersion')}), "
                f"a kind evaplan does not render (it renders {kinds})",
                hint=fix,
            )
        meta = obj.get("metadata") or {}
        if meta.get("namespace") != namespace:
            raise ManifestRefused(
                f"bundle {where}: {_name(obj)} is in namespace {meta.get('namespace')!r}, "
                f"not the job's namespace {namespace!r}",
                hint=fix,
            )
        if (meta.get("labels") or {}).get(JOB_LABEL) != job_name:
            raise ManifestRefused(
                f"bundle {where}: {_name(obj)} lacks the label {JOB_LABEL}={job_name}", hint=fix
            )
        if object_digest(obj) != digest:
            raise ManifestRefused(
                f"bundle {where}: {_name(obj)} differs from what evaplan rendered (sha256 mismatch)", hint=fix
            )
        check_pod_policy(obj, where, promise)
