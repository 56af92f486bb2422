"""WebDataset shards for the data tests (the trainer only reads shards; writing them is the tests' job)."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path


def write_shards(
    pairs: list[tuple[bytes, str]], folder: str | Path, *, samples_per_shard: int, image_ext: str = "png"
) -> list[Path]:
    """Write (image bytes, caption) pairs as WebDataset tar shards `shard-000000.tar`, ...;
    each shard is written to a temporary name and renamed, so no reader sees half a shard."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    out: list[Path] = []
    for s in range(0, len(pairs), samples_per_shard):
        path = folder / f"shard-{s // samples_per_shard:06d}.tar"
        tmp = path.with_name(path.name + ".tmp")
        with tarfile.open(tmp, "w") as tar:
            for i, (img, caption) in enumerate(pairs[s : s + samples_per_shard], start=s):
                for name, payload in (
                    (f"{i:09d}.{image_ext}", img),
                    (f"{i:09d}.txt", caption.encode("utf-8")),
                ):
                    info = tarfile.TarInfo(name)
                    info.size = len(payload)
                    tar.addfile(info, io.BytesIO(payload))
        tmp.replace(path)
        out.append(path)
    return out
