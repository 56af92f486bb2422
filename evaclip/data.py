"""Image-text pairs for the trainer: a learnable synthetic set, and WebDataset-style tar shards.

Synthetic (`data.kind: synthetic`): `synthetic_classes` concepts; each has a fixed random image
prototype and a caption ("a photo of a red cat"); a sample is its class's prototype plus noise.
Contrastive training learns to match them, so the loss falls measurably within tens of steps. Every
sample is a pure function of (seed, global sample index), so a resumed run sees exactly the batches
an uninterrupted run would.

Shards (`data.kind: webdataset`): `*.tar` files in a local folder or under `s3://bucket/prefix`,
each holding pairs `<key>.jpg|jpeg|png|webp` + `<key>.txt` (the WebDataset convention: members that
share a key form one sample). Shards are split over ranks (rank r takes shards r, r + world, ...) and
then over DataLoader workers; the stream repeats epochs with a per-epoch shuffled shard order.
Images are decoded with Pillow, resized (shorter side, bicubic) and centre-cropped, normalised with
the OpenAI CLIP mean/std; captions go through the CLIP BPE tokenizer. Resuming skips the samples
this rank has already seen by reading tar headers without decoding images.
"""

from __future__ import annotations

import io
import random
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from evaclip import storage
from evaclip.tokenizer import get_tokenizer
from planner.errors import EvaplanError

# OpenAI CLIP's image normalisation (open_clip constants OPENAI_DATASET_MEAN / _STD).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
IMAGE_EXTS = ("jpg", "jpeg", "png", "webp")

_COLOURS = ["red", "green", "blue", "yellow", "black", "white", "orange", "purple"]
_NOUNS = ["cat", "dog", "car", "tree", "house", "bird", "boat", "flower"]
MAX_SYNTHETIC_CLASSES = len(_COLOURS) * len(_NOUNS)
# Noise on top of each prototype, in normalised pixel units: enough that a sample is not its
# prototype, little enough that 30 steps on a tiny model learn the classes.
SYNTHETIC_NOISE_STD = 0.2


def synthetic_caption(cls: int) -> str:
    return f"a photo of a {_COLOURS[cls // len(_NOUNS)]} {_NOUNS[cls % len(_NOUNS)]}"


class SyntheticPairs:
    """Random-access synthetic pairs: `pairs.batch(indices)` → (images, tokens)."""

    def __init__(self, *, image_size: int, context_length: int, classes: int, seed: int) -> None:
        if classes > MAX_SYNTHETIC_CLASSES:
            raise EvaplanError(
                f"data.synthetic_classes {classes} exceeds the {MAX_SYNTHETIC_CLASSES} captions the synthetic set has",
                hint=f"use at most {MAX_SYNTHETIC_CLASSES}",
            )
        self.image_size = image_size
        self.classes = classes
        self.seed = seed
        g = torch.Generator().manual_seed(seed)
        # Prototypes on an 8×8 grid upsampled to the image: structure a patch embedding can see.
        coarse = torch.randn(classes, 3, 8, 8, generator=g)
        self.prototypes = torch.nn.functional.interpolate(
            coarse, size=(image_size, image_size), mode="nearest"
        )
        self.tokens = get_tokenizer()([synthetic_caption(c) for c in range(classes)], context_length)

    def sample(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + index)
        cls = int(torch.randint(self.classes, (1,), generator=g))
        noise = torch.randn(3, self.image_size, self.image_size, generator=g) * SYNTHETIC_NOISE_STD
        return self.prototypes[cls] + noise, self.tokens[cls]

    def batch(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        images, tokens = zip(*(self.sample(i) for i in indices), strict=True)
        return torch.stack(images), torch.stack(tokens)


def synthetic_batches(
    pairs: SyntheticPairs, *, micro_batch: int, rank: int, world_size: int, start_micro_step: int
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Micro-batches for one rank; micro-step m of the run holds global samples
    (m · world + rank) · micro_batch ... + micro_batch − 1."""
    m = start_micro_step
    while True:
        first = (m * world_size + rank) * micro_batch
        yield pairs.batch(list(range(first, first + micro_batch)))
        m += 1


# --------------------------------------------------------------------------- images
def preprocess_image(data: bytes, image_size: int) -> torch.Tensor:
    """Decode, resize the shorter side to image_size (bicubic), centre-crop, normalise."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        im = im.convert("RGB")
        w, h = im.size
        scale = image_size / min(w, h)
        im = im.resize((max(image_size, round(w * scale)), max(image_size, round(h * scale))), Image.BICUBIC)
        w, h = im.size
        left, top = (w - image_size) // 2, (h - image_size) // 2
        im = im.crop((left, top, left + image_size, top + image_size))
        raw = torch.frombuffer(bytearray(im.tobytes()), dtype=torch.uint8)
    x = raw.view(image_size, image_size, 3).permute(2, 0, 1).float() / 255.0
    mean = torch.tensor(CLIP_MEAN).view(3, 1, 1)
    std = torch.tensor(CLIP_STD).view(3, 1, 1)
    return (x - mean) / std


# --------------------------------------------------------------------------- shards
def list_shards(url: str) -> list[str]:
    """Shard URLs (local paths or s3:// URIs) under a folder or prefix, sorted."""
    if storage.is_s3(url):
        uri = storage.parse_s3_uri(url)
        shards = [f"s3://{uri.bucket}/{k}" for k in storage.list_keys(uri, ".tar")]
    else:
        folder = Path(url).expanduser()
        if not folder.is_dir():
            raise EvaplanError(
                f"data.url {url} is not a folder",
                hint="point it at a folder of *.tar shards or an s3:// prefix",
            )
        shards = [str(p) for p in sorted(folder.glob("*.tar"))]
    if not shards:
        raise EvaplanError(
            f"no *.tar shards under {url}", hint="write shards with evaclip.data.write_shards or fix data.url"
        )
    return shards


def _open_shard(url: str) -> tarfile.TarFile:
    if storage.is_s3(url):
        uri = storage.parse_s3_uri(url)
        return tarfile.open(fileobj=storage.open_stream(uri.bucket, uri.key), mode="r|*")
    return tarfile.open(url, mode="r|*")


def iter_shard_samples(
    url: str, *, decode: bool | Callable[[], bool] = True
) -> Iterator[tuple[str, bytes | None, str | None]]:
    """(key, image bytes, caption) per complete sample of one shard, in tar order. `decode` (or a
    function asked at the start of each sample) False: payloads are not read and come back None —
    for skipping samples on resume without reading their bytes."""
    want = decode if callable(decode) else (lambda: decode)
    current: str | None = None
    image: bytes | None = None
    caption: str | None = None
    has_image = has_text = False
    reading = True
    with _open_shard(url) as tar:
        for member in tar:
            if not member.isfile():
                continue
            key, _, ext = member.name.rpartition(".")
            ext = ext.lower()
            if key != current:
                if current is not None and has_image and has_text:
                    yield current, image, caption
                current, image, caption, has_image, has_text = key, None, None, False, False
                reading = want()
            if ext in IMAGE_EXTS:
                has_image = True
                if reading:
                    image = tar.extractfile(member).read()  # type: ignore[union-attr]
            elif ext == "txt":
                has_text = True
                if reading:
                    caption = tar.extractfile(member).read().decode("utf-8")  # type: ignore[union-attr]
        if current is not None and has_image and has_text:
            yield current, image, caption


class ShardStream(IterableDataset):
    """One rank's endless stream of (image, tokens) from its share of the shards."""

    def __init__(
        self,
        url: str,
        *,
        image_size: int,
        context_length: int,
        rank: int,
        world_size: int,
        seed: int,
        skip_samples: int = 0,
    ) -> None:
        super().__init__()
        self.shards = list_shards(url)
        if len(self.shards) < world_size:
            raise EvaplanError(
                f"{len(self.shards)} shards under {url} for {world_size} ranks",
                hint="write at least one shard per rank (more is better: several per DataLoader worker)",
            )
        self.image_size, self.context_length = image_size, context_length
        self.rank, self.world_size, self.seed = rank, world_size, seed
        self.skip_samples = skip_samples

    def _my_shards(self, epoch: int) -> list[str]:
        order = list(self.shards)
        random.Random(self.seed + epoch).shuffle(order)
        mine = order[self.rank :: self.world_size]
        info = get_worker_info()
        if info is not None:
            mine = mine[info.id :: info.num_workers]
        return mine

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        tok = get_tokenizer()
        info = get_worker_info()
        workers = info.num_workers if info is not None else 1
        # DataLoader interleaves its workers round-robin, so each worker skips its share.
        # A one-element list: the reader asks at each sample whether skipping is over.
        to_skip = [self.skip_samples // workers]
        skipping_done = lambda: to_skip[0] == 0  # noqa: E731
        epoch = 0
        while True:
            shards = self._my_shards(epoch)
            if not shards:
                return  # more workers than this rank's shards: this worker has nothing to read
            for shard in shards:
                for _key, image, caption in iter_shard_samples(shard, decode=skipping_done):
                    if to_skip[0]:
                        to_skip[0] -= 1
                        continue
                    yield preprocess_image(image, self.image_size), tok(caption, self.context_length)[0]  # type: ignore[arg-type]
            epoch += 1


def shard_batches(
    stream: ShardStream, *, micro_batch: int, num_workers: int
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    loader = DataLoader(stream, batch_size=micro_batch, num_workers=num_workers, drop_last=True)
    yield from loader
