"""Object storage for shards and checkpoints: `s3://bucket/prefix` URIs through boto3.

boto3 is imported lazily, on first use, so that the trainer and every command that never touches
S3 start without paying for it (and run where it is not installed). Credentials and the
endpoint come from boto3's standard sources: AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY /
AWS_SESSION_TOKEN, AWS_REGION / AWS_DEFAULT_REGION, and AWS_ENDPOINT_URL_S3 (or AWS_ENDPOINT_URL)
for S3-compatible stores (MinIO, Ceph, a moto server in tests).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from planner.errors import EvaplanError, RuntimeFailure


@dataclass(frozen=True)
class S3Uri:
    bucket: str
    key: str  # no leading slash; may be "" (the bucket root)

    def child(self, name: str) -> S3Uri:
        key = f"{self.key.rstrip('/')}/{name}" if self.key else name
        return S3Uri(self.bucket, key)

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.key}"


def is_s3(uri: str | None) -> bool:
    return bool(uri) and str(uri).startswith("s3://")


def parse_s3_uri(uri: str) -> S3Uri:
    if not is_s3(uri):
        raise EvaplanError(f"'{uri}' is not an s3:// URI", hint="write it as s3://bucket/prefix")
    rest = uri[len("s3://") :]
    bucket, _, key = rest.partition("/")
    if not bucket:
        raise EvaplanError(f"'{uri}' names no bucket", hint="write it as s3://bucket/prefix")
    return S3Uri(bucket, key.strip("/"))


def client() -> Any:
    try:
        import boto3
    except ImportError:  # pragma: no cover - boto3 is a core dependency
        raise EvaplanError("s3:// needs boto3", hint="pip install boto3") from None
    return boto3.client("s3")


@contextmanager
def s3_errors(what: str) -> Iterator[None]:
    """Turn boto3's failures (no credentials, endpoint down, access denied, no bucket) into one line."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        yield
    except (BotoCoreError, ClientError) as e:
        raise RuntimeFailure(
            f"S3: cannot {what}: {e}",
            hint="check AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL_S3 and the bucket name",
        ) from None


def list_keys(uri: S3Uri, suffix: str = "") -> list[str]:
    """Every key under the prefix (recursively) that ends with `suffix`, sorted."""
    prefix = f"{uri.key.rstrip('/')}/" if uri.key else ""
    keys: list[str] = []
    with s3_errors(f"list {uri}"):
        for page in client().get_paginator("list_objects_v2").paginate(Bucket=uri.bucket, Prefix=prefix):
            keys.extend(o["Key"] for o in page.get("Contents", ()) if o["Key"].endswith(suffix))
    return sorted(keys)


def open_stream(bucket: str, key: str) -> IO[bytes]:
    """A streaming body (read it front to back; nothing lands on disk)."""
    with s3_errors(f"read s3://{bucket}/{key}"):
        return client().get_object(Bucket=bucket, Key=key)["Body"]


def get_bytes(uri: S3Uri) -> bytes | None:
    """The object's bytes, or None when it does not exist."""
    c = client()
    with s3_errors(f"read {uri}"):
        try:
            return c.get_object(Bucket=uri.bucket, Key=uri.key)["Body"].read()
        except c.exceptions.NoSuchKey:
            return None


def put_bytes(uri: S3Uri, data: bytes) -> None:
    with s3_errors(f"write {uri}"):
        client().put_object(Bucket=uri.bucket, Key=uri.key, Body=data)


def download_prefix(uri: S3Uri, local: Path) -> int:
    """Download every object under `uri/` into `local`, keeping relative paths; returns the count."""
    c = client()
    n = 0
    base = f"{uri.key.rstrip('/')}/"
    for key in list_keys(uri):
        dest = local / key[len(base) :]
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(dest.name + ".part")
        with s3_errors(f"download s3://{uri.bucket}/{key}"):
            c.download_file(uri.bucket, key, str(tmp))
        tmp.replace(dest)
        n += 1
    return n


def iter_prefixes(uri: S3Uri) -> Iterator[str]:
    """The immediate "sub-folders" of a prefix (CommonPrefixes with delimiter '/')."""
    prefix = f"{uri.key.rstrip('/')}/" if uri.key else ""
    with s3_errors(f"list {uri}"):
        pages = list(
            client()
            .get_paginator("list_objects_v2")
            .paginate(Bucket=uri.bucket, Prefix=prefix, Delimiter="/")
        )
    for page in pages:
        for p in page.get("CommonPrefixes", ()):
            yield p["Prefix"][len(prefix) :].rstrip("/")
