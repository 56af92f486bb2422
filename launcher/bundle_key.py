"""The bundle key: proof that a bundle is what evaplan rendered for this user, not just consistent.

Threat model. A bundle is a plain folder: it is copied, shared, committed, downloaded, kept on a
shared filesystem. Whoever can write that folder can edit manifests.yaml and recompute every digest
bundle.json holds (sha256 needs no secret), so digests alone prove consistency, not origin. `render`
therefore signs bundle.json (which lists every other file's sha256) with HMAC-SHA256 under a key
kept in the user's job store, `<state dir>/bundle-key` (32 random bytes, hex; a regular file of
mode 0600 owned by the user, made once, atomically, on the first render), and `launch` refuses a
bundle whose signature does not verify under that key. An editor of the bundle folder who cannot
read the user's state dir cannot forge a bundle that `launch` accepts.

Not in scope: someone who can read the user's files (the key) already holds the user's
kubeconfig, and could submit anything with kubectl; for that case, and for a template bug, the pod
policy (launcher/pod_policy.py) still refuses any pod the templates would not render.

Sharing: the key signs for one job store. To launch a bundle rendered elsewhere, re-render it
here; a team that renders in CI and launches elsewhere can share the key file as a secret
(EVAPLAN_STATE_DIR/bundle-key on both sides), like any signing key.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import secrets
import stat
from pathlib import Path
from typing import Any

from launcher.files import create_once
from launcher.state import state_dir
from planner.errors import EvaplanError

KEY_FILE = "bundle-key"
SIGNATURE_FIELD = "signature"
ALGORITHM = "hmac-sha256"
# Domain separation: this key signs bundle.json documents of format 1 and nothing else.
_CONTEXT = b"evaplan bundle.json v1\n"
_KEY_RE = re.compile(r"[0-9a-f]{64}")
REFUSED = "not signed with this job store's key"
RE_RENDER = "re-render it here with `evaplan render ... -o DIR`; evaplan submits only bundles it rendered"


class BundleKeyError(EvaplanError):
    """The key file is unusable (readable by others, not ours, corrupt)."""


def key_path(root: Path | None = None) -> Path:
    return (root or state_dir()) / KEY_FILE


def _check_file(path: Path) -> None:
    """Refuse a key that is a link, not a regular file, not the user's own or readable by others."""
    st = path.lstat()
    fix = f"remove {path} (bundles signed with it must then be re-rendered) or `chmod 600 {path}`"
    if not stat.S_ISREG(st.st_mode):
        raise BundleKeyError(f"the bundle key {path} is not a regular file", hint=fix)
    if st.st_uid != os.getuid():
        raise BundleKeyError(f"the bundle key {path} belongs to another user", hint=fix)
    if st.st_mode & 0o077:
        raise BundleKeyError(
            f"the bundle key {path} is readable by others (mode {st.st_mode & 0o777:o})", hint=fix
        )


def _read(path: Path) -> bytes:
    _check_file(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        with os.fdopen(fd, "rb") as f:
            text = f.read(200).decode("ascii", errors="replace").strip()
    except OSError as e:
        raise BundleKeyError(
            f"cannot read the bundle key {path}: {e.strerror}", hint="check its permissions"
        ) from None
    if not _KEY_RE.fullmatch(text):
        raise BundleKeyError(
            f"the bundle key {path} is not 64 hex digits",
            hint=f"remove {path}; bundles signed with it must then be re-rendered",
        )
    return bytes.fromhex(text)


def load_key(*, create: bool, root: Path | None = None) -> bytes | None:
    """The job store's key; made (0600, atomically, never overwritten) when `create` and absent.
    None when absent and not `create`."""
    path = key_path(root)
    if os.path.lexists(path):
        return _read(path)
    if not create:
        return None
    create_once(path, secrets.token_hex(32) + "\n", "the bundle key")  # first renders agree on one key
    return _read(path)


def _key_id(key: bytes) -> str:
    """Names the key without revealing it: tells "another store's key" from "edited"."""
    return hashlib.sha256(b"evaplan key id\n" + key).hexdigest()[:16]


def _mac(key: bytes, meta: dict[str, Any]) -> str:
    unsigned = {k: v for k, v in meta.items() if k != SIGNATURE_FIELD}
    text = json.dumps(unsigned, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hmac.new(key, _CONTEXT + text.encode("utf-8"), hashlib.sha256).hexdigest()


def sign(meta: dict[str, Any], root: Path | None = None) -> dict[str, Any]:
    """`meta` with its signature under this job store's key (made on first use)."""
    key = load_key(create=True, root=root)
    assert key is not None
    return {**meta, SIGNATURE_FIELD: {"alg": ALGORITHM, "key_id": _key_id(key), "mac": _mac(key, meta)}}


def verify(meta: dict[str, Any], where: str, root: Path | None = None) -> None:
    """Refuse (EvaplanError, exit 2) unless `meta` carries a valid signature under this store's key.
    The message never quotes the bundle's content."""
    sig = meta.get(SIGNATURE_FIELD)
    if not isinstance(sig, dict) or sig.get("alg") != ALGORITHM or not isinstance(sig.get("mac"), str):
        raise EvaplanError(
            f"bundle {where} is {REFUSED} (it carries no signature: rendered by an older evaplan, "
            "or its bundle.json was edited)",
            hint=RE_RENDER,
        )
    key = load_key(create=False, root=root)
    path = key_path(root)
    if key is None:
        raise EvaplanError(
            f"bundle {where} is {REFUSED} (there is no key at {path}: nothing was rendered with "
            "this job store)",
            hint=RE_RENDER,
        )
    if sig.get("key_id") != _key_id(key):
        raise EvaplanError(
            f"bundle {where} is {REFUSED} {path} (it was signed with another key: rendered elsewhere)",
            hint=RE_RENDER,
        )
    if not hmac.compare_digest(sig["mac"], _mac(key, meta)):
        raise EvaplanError(
            f"bundle {where} is {REFUSED} {path} (bundle.json was edited after evaplan signed it)",
            hint=RE_RENDER,
        )
