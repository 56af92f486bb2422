"""Checkpoints: DeepSpeed engine state under `<dir>/<tag>/`, a manifest that proves the checkpoint
complete, a `latest` pointer, optional S3 mirror, and resume that skips a bad newest checkpoint.

Layout (local and S3 alike):
    <dir>/step00000120/...                 DeepSpeed's files (model states, per-rank ZeRO shards)
    <dir>/step00000120/evaclip-manifest.json   {"step", "files": {relative path: {"bytes", "sha256"}}}
                                           — written after every file, before `latest`
    <dir>/latest                           the newest complete tag — written after the manifest

A checkpoint counts only when its manifest exists and every listed file has the listed size and
sha256 (each rank hashes the files it wrote on save and checks a share of all files on resume); a
checkpoint that fails this check or fails to load is skipped with a warning naming the file and the
previous one is tried. Resume takes the newest checkpoint by step that passes, local or on S3:
`latest` is a hint for other readers, never a reason to go back to an older step. With `s3_uri`, every rank uploads the files it wrote (its `*_rank_<r>_*` ZeRO shards; rank 0
also the rest), then rank 0 uploads the manifest and finally `latest`, so a reader never sees a
`latest` that points at a partial upload. The checkpoint folder must be shared by the ranks of a
node (it is: one pod per node); across nodes either a shared filesystem or S3.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from evaclip import storage

MANIFEST = "evaclip-manifest.json"
LATEST = "latest"
TAG_RE = re.compile(r"^step(\d{8})$")


def tag_for(step: int) -> str:
    return f"step{step:08d}"


def _warn(msg: str) -> None:
    print(f"[evaclip] warning: {msg}", file=sys.stderr, flush=True)


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def _rank_world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _all_ok(ok: bool) -> bool:
    """True only if every rank says True (ranks must agree on which checkpoint to use)."""
    if not (dist.is_available() and dist.is_initialized()):
        return ok
    t = torch.tensor([1 if ok else 0], dtype=torch.int32)
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return bool(t.item())


def _sha256_file(path: Path, chunk_bytes: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk_bytes):
            h.update(block)
    return h.hexdigest()


def _owned_files(tag_dir: Path, rank: int) -> dict[str, dict[str, Any]]:
    """Files of a checkpoint this rank is responsible for (uploads, manifest entries), with their
    size and sha256: each rank hashes what it wrote, so the hashing is spread over the ranks."""
    mine = re.compile(rf"_rank_0*{rank}_")
    any_rank = re.compile(r"_rank_\d+_")
    out = {}
    for p in sorted(tag_dir.rglob("*")):
        if not p.is_file() or p.name == MANIFEST:
            continue
        name = p.name.replace("mp_rank_00", "mp")  # model-parallel rank is not a data-parallel rank
        if mine.search(name) or (rank == 0 and not any_rank.search(name)):
            out[p.relative_to(tag_dir).as_posix()] = {"bytes": p.stat().st_size, "sha256": _sha256_file(p)}
    return out


def _first_reason(reason: str | None) -> str | None:
    """The first rank's reason to reject a checkpoint, known to every rank (each checks a share)."""
    if not (dist.is_available() and dist.is_initialized()):
        return reason
    reasons: list[str | None] = [None] * dist.get_world_size()
    dist.all_gather_object(reasons, reason)
    return next((r for r in reasons if r), None)


@dataclass
class Checkpointer:
    dir: Path
    s3_uri: str | None = None
    keep: int = 3

    def save(self, engine: Any, step: int, client_state: dict[str, Any]) -> tuple[str, float, bool]:
        """Collective: every rank calls it. Returns (tag, seconds, uploaded)."""
        t0 = time.time()
        rank, _ = _rank_world()
        tag = tag_for(step)
        self.dir.mkdir(parents=True, exist_ok=True)
        engine.save_checkpoint(str(self.dir), tag=tag, client_state=client_state, save_latest=False)
        tag_dir = self.dir / tag
        owned = _owned_files(tag_dir, rank)
        gathered: list[dict[str, dict[str, Any]]] = [owned]
        if dist.is_available() and dist.is_initialized():
            gathered = [{} for _ in range(dist.get_world_size())]
            dist.all_gather_object(gathered, owned)
        files = {k: v for part in gathered for k, v in part.items()}
        uploaded = False
        if self.s3_uri:
            base = storage.parse_s3_uri(self.s3_uri).child(tag)
            c = storage.client()
            with storage.s3_errors(f"upload checkpoint {tag} to {base}"):
                for rel in owned:
                    c.upload_file(str(tag_dir / rel), base.bucket, base.child(rel).key)
            if dist.is_available() and dist.is_initialized():
                dist.barrier()
            uploaded = True
        if rank == 0:
            manifest = json.dumps({"step": step, "tag": tag, "files": files, "time": time.time()}, indent=1)
            _write_atomic(tag_dir / MANIFEST, manifest)
            _write_atomic(self.dir / LATEST, tag)
            if self.s3_uri:
                uri = storage.parse_s3_uri(self.s3_uri)
                storage.put_bytes(uri.child(tag).child(MANIFEST), manifest.encode())
                storage.put_bytes(uri.child(LATEST), tag.encode())  # last: the pointer
            self._prune()
        if dist.is_available() and dist.is_initialized():
            dist.barrier()
        return tag, time.time() - t0, uploaded

    def _prune(self) -> None:
        """Keep the newest `keep` complete local checkpoints (S3 keeps everything: lifecycle rules
        belong to the bucket)."""
        tags = sorted((p.name for p in self.dir.iterdir() if TAG_RE.match(p.name)), reverse=True)
        complete = [t for t in tags if (self.dir / t / MANIFEST).exists()]
        for t in complete[self.keep :]:
            shutil.rmtree(self.dir / t, ignore_errors=True)

    # ------------------------------------------------------------------ resume
    def _candidates(self) -> list[str]:
        """Tags to try, newest step first, local and S3 together. The `latest` pointers are only
        hints: the pointer is written after its checkpoint, so when its write (or upload) fails it
        names an older checkpoint than the newest complete one, and trusting it would resume
        backwards. A tag a pointer names is tried too, in its place by step, in case a listing
        misses it; each candidate is verified before it is loaded (`load_latest`)."""
        tags: set[str] = set()
        pointers: list[str] = []
        if self.s3_uri:
            uri = storage.parse_s3_uri(self.s3_uri)
            raw = storage.get_bytes(uri.child(LATEST))
            pointers.append(raw.decode(errors="replace").strip() if raw else "")
            tags.update(t for t in storage.iter_prefixes(uri) if TAG_RE.match(t))
        if self.dir.is_dir():
            if (self.dir / LATEST).is_file():
                pointers.append((self.dir / LATEST).read_text(errors="replace").strip())
            tags.update(p.name for p in self.dir.iterdir() if TAG_RE.match(p.name))
        tags.update(t for t in pointers if TAG_RE.match(t))
        return sorted(tags, reverse=True)  # step{:08d}: text order is step order

    def _fetch(self, tag: str) -> None:
        """Bring an S3 checkpoint to the local folder unless a complete copy is there."""
        if not self.s3_uri or self._verify(tag, digests=False) is None:
            return
        rank, _ = _rank_world()
        uri = storage.parse_s3_uri(self.s3_uri).child(tag)
        # Each rank downloads into its own staging folder, then moves it in place; ranks of one
        # node share the folder, so only local rank 0's copy is kept when they race.
        staging = self.dir / f".{tag}.rank{rank}.download"
        shutil.rmtree(staging, ignore_errors=True)
        if storage.download_prefix(uri, staging) == 0:
            shutil.rmtree(staging, ignore_errors=True)
            return
        target = self.dir / tag
        if not (target / MANIFEST).exists():
            shutil.rmtree(target, ignore_errors=True)
            try:
                staging.replace(target)
            except OSError:
                pass  # another rank of this node moved its copy first
        shutil.rmtree(staging, ignore_errors=True)

    def _verify(self, tag: str, *, digests: bool = True) -> str | None:
        """None if the local checkpoint is complete and intact, else the reason it is not. Every
        listed file must exist with its size; with `digests`, this rank also checks the sha256 of
        its share of the files (file i of n goes to rank i mod world size; `_first_reason` makes
        the verdict common), so a flipped byte in a file of the right size is caught."""
        tag_dir = self.dir / tag
        try:
            manifest = json.loads((tag_dir / MANIFEST).read_text())
        except FileNotFoundError:
            return "no manifest (the save did not finish)"
        except (OSError, json.JSONDecodeError) as e:
            return f"unreadable manifest ({e})"
        files = manifest.get("files") if isinstance(manifest, dict) else None
        if not isinstance(files, dict):
            return "the manifest lists no files"
        rank, world = _rank_world()
        for i, (rel, entry) in enumerate(sorted(files.items())):
            # Manifests before checksums (evaplan ≤ 0.x) hold the size alone.
            size = entry.get("bytes") if isinstance(entry, dict) else entry
            p = tag_dir / rel
            if not p.is_file():
                return f"{rel} is missing"
            if p.stat().st_size != size:
                return f"{rel} has {p.stat().st_size} bytes, the manifest says {size}"
            want = entry.get("sha256") if isinstance(entry, dict) else None
            if digests and want and i % world == rank and _sha256_file(p) != want:
                return f"{rel} does not match its sha256 in the manifest (changed after it was written)"
        return None

    def load_latest(self, engine: Any) -> tuple[str, dict[str, Any]] | None:
        """Collective: load the newest good checkpoint; returns (tag, client_state) or None."""
        rank, _ = _rank_world()
        if rank == 0:
            self.dir.mkdir(parents=True, exist_ok=True)
        if dist.is_available() and dist.is_initialized():
            dist.barrier()
        candidates = self._candidates()
        if dist.is_available() and dist.is_initialized():  # every rank tries the same list
            box = [candidates]
            dist.broadcast_object_list(box, src=0)
            candidates = box[0]
        for tag in candidates:
            try:
                self._fetch(tag)
                reason = self._verify(tag)
            except Exception as e:  # a broken download is a bad checkpoint, not a crash
                reason = f"download failed ({type(e).__name__}: {e})"
            reason = _first_reason(reason)
            if reason is not None:
                if rank == 0:
                    _warn(f"skipping checkpoint {tag}: {reason}; trying the previous one")
                continue
            try:
                path, client_state = engine.load_checkpoint(
                    str(self.dir), tag=tag, load_optimizer_states=True, load_lr_scheduler_states=False
                )
                ok = path is not None
                reason = None if ok else "DeepSpeed found nothing to load"
            except Exception as e:
                ok, reason = False, f"{type(e).__name__}: {e}"
            if _all_ok(ok):
                return tag, client_state or {}
            if rank == 0:
                _warn(f"checkpoint {tag} failed to load ({reason}); trying the previous one")
        return None
