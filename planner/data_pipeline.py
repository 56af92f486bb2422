"""The host's share of a CLIP training step: what one CPU core does per image, and how many cores do it.

A CLIP data loader (OpenCLIP's, NeMo's, the bundled trainer's) turns each sample into a tensor in a
DataLoader worker process: JPEG decode, a random resized crop to the training resolution, then
conversion to a float tensor and per-channel normalisation. One image's CPU time is the sum of its
stages' single-core times, so one core sustains

    images/s per core = 1 / (1/decode + 1/random_resized_crop + 1/normalize)

The decode rate is CPU-specific and comes from the hardware profile (`image_decode_per_core_s`: a
measurement on the profile's host CPU generation, clock-scaled to its part where the source says how);
the two augmentation rates are single-thread measurements on ImageNet validation images from one public
benchmark (below), applied to every CPU: no public table measures them on each profile's host CPU.
Left out, so the ceiling stays optimistic: tar/shard reading and storage I/O; the size of the dataset's
own JPEGs (decode is priced on ImageNet validation images, and LAION shards written by img2dataset at
`--image_size 256` would decode faster, but no source here says which shards a published run read);
caption tokenisation (80.1 µs per caption for Hugging Face's CLIPTokenizerFast, mlfoundations/open_clip
issue #755, 2023-12-06, about 2 % of a sample's CPU time here) and batch collation plus the copy from
the worker to the training process (ternaus/imread_benchmark's Pillow DataLoader rows on an EPYC 9B14,
2026-05-20: 844.47 img/s with 2 workers against 517.71 in one loop, 0.82 per worker). Priced on
ImageNet-sized decode, those two would push the one loader-bound H100 run (nemo-b32-h100-4node,
2,630 samples/s per GPU published on 8 workers, already predicted below that) further below its
figure, so they wait for the dataset's own image size.

The workers that run this: the run's DataLoader worker processes per GPU (`--data-workers`; a
published run's `--workers` or NeMo `model.data.num_workers`), by default what `evaplan render` gives
each rank (4, below); never more than a GPU's share of the host's cores (more processes than cores
add no throughput).
"""

from __future__ import annotations

from typing import Any

from planner.spec import HardwareSpec

Num = Any  # float or numpy array (planner/ops.py's convention)

# Single-thread augmentation rates, images/s, torchvision 0.26.0 on ImageNet validation images:
# albumentations-team/benchmark README, image benchmark table, rows RandomResizedCrop (978 ± 8) and
# Normalize (1355 ± 3), https://github.com/albumentations-team/benchmark/blob/7f6a527a243e189759e1335c676f3e699b5792f5/README.md
# (commit of 2026-05-02; micro benchmarks "use one internal CPU thread for every library"; the
# repository's published micro results were run on a 16-core Apple arm64 machine, not a server CPU).
# torchvision's column (tensor inputs) rather than Pillow's: OpenCLIP crops PIL images (Pillow's row:
# 1282 img/s, faster) but then converts to a tensor (ToTensor), which no row prices; the slower crop
# stands in for crop plus conversion. Pillow's Normalize row (450 img/s) normalizes PIL images,
# which no trainer here does.
RANDOM_RESIZED_CROP_PER_CORE_S = 978.0
NORMALIZE_PER_CORE_S = 1355.0
PIPELINE_SOURCE = (
    "albumentations-team/benchmark README (2026-05-02): torchvision 0.26.0 single-thread RandomResizedCrop "
    "978 img/s, Normalize 1355 img/s on ImageNet validation images, https://github.com/albumentations-team/"
    "benchmark/blob/7f6a527a243e189759e1335c676f3e699b5792f5/README.md"
)


def pipeline_per_core_s(hw: HardwareSpec) -> float:
    """Images/s one host core turns into training tensors: decode, random resized crop, normalize."""
    per_image_s = (
        1.0 / hw.image_decode_per_core_s.value
        + 1.0 / RANDOM_RESIZED_CROP_PER_CORE_S
        + 1.0 / NORMALIZE_PER_CORE_S
    )
    return 1.0 / per_image_s


# DataLoader worker processes per GPU when a run does not choose. OpenCLIP's own default
# (open_clip_train/params.py `--workers`, "Number of dataloader workers per GPU", default 4,
# https://github.com/mlfoundations/open_clip), and few enough that the pod `render` sizes for it fits
# the smallest 8-GPU machines the bundled offerings name: per GPU one core for the rank, one for its
# proxy and loader thread, the workers, and 4 DeepSpeedCPUAdam threads when the optimizer is offloaded
# (launcher/sizing.py), 8 × (2 + 4 + 4) = 80 CPUs, within the 96 vCPUs of Azure's ND96isr H100 v5 and
# ND96isr MI300X v5 (Kubernetes places a pod only within a node's allocatable CPU, below its 96).
# A host core per GPU more than that is not assumed: profiles give a reference node's cores, not
# every offering's. More workers (`--data-workers`) lower the data-loading floor up to the cores.
DEFAULT_LOADER_WORKERS = 4


def default_loader_workers(hw: HardwareSpec) -> int:
    """DataLoader workers per GPU when a run does not choose: DEFAULT_LOADER_WORKERS, or a GPU's whole
    share of the host's cores where that is fewer."""
    return max(1, min(DEFAULT_LOADER_WORKERS, int(hw.host_cpu_cores.value // hw.gpus_per_node)))


def loader_workers_for(hw: HardwareSpec, loader_workers: int | None) -> int:
    """The DataLoader workers per GPU a run has: its own, or default_loader_workers when None (what
    the estimate prices and `render` gives each rank)."""
    return default_loader_workers(hw) if loader_workers is None else loader_workers


def loader_cores_per_gpu(hw: HardwareSpec, loader_workers: int | None) -> float:
    """Cores decoding for one GPU: the run's workers (loader_workers_for), at most the GPU's share of
    the node's cores."""
    return min(float(loader_workers_for(hw, loader_workers)), hw.host_cpu_cores.value / hw.gpus_per_node)


def data_loading_s(hw: HardwareSpec, samples_per_gpu: Num, loader_workers: int | None = None) -> Num:
    """Time the host needs to prepare one GPU's samples of a step: a floor under the step time."""
    return samples_per_gpu / (loader_cores_per_gpu(hw, loader_workers) * pipeline_per_core_s(hw))
