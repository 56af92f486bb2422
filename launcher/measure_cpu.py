"""Measure this CPU host the way a GPU datasheet and nccl-tests describe a GPU node, and write the
result as a `cpu` hardware profile (`evaplan profiles measure-cpu`, benchmarks/measure_cpu.py).

One "GPU" is one local rank of `evaplan launch --backend local`: one process with OMP_NUM_THREADS=1
(what the local backend sets). Measured per rank:
- dense GEMM TFLOP/s in bf16 and fp32 (F.linear on square matrices, the median of repeats per size;
  the best size stands for the peak, as a datasheet's figure is the best case);
- memory copy GB/s (torch copy_ of a 256 MiB tensor; bytes read + written per second, the STREAM
  "copy" convention, comparable to a GPU's HBM TB/s) and one way (offload's host↔device figure on a
  host whose device is the host);
- gloo all-reduce and all-gather bus bandwidth between local ranks over 127.0.0.1 (nccl-tests
  PERFORMANCE.md: busbw = algbw × 2(n−1)/n for all-reduce, × (n−1)/n for all-gather; 64 MiB
  messages) and the small-message latency (8 B all-reduce);
- the resident memory of one rank after `import torch, deepspeed` and a gloo process group (the
  runtime context a rank pays before any tensor: memory_reserved_gib);
- AdamW throughput (torch.optim.AdamW foreach, fp32, 2^22 parameters), parameters per second;
- file write GB/s with fsync in the temp folder, host RAM, disk size and CPU cores.

torch and deepspeed are imported inside the functions: `evaplan` starts without them.
"""

from __future__ import annotations

import copy
import datetime as dt
import os
import shutil
import socket
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from planner.units import GIB

MIB = 2**20
BF16_SIZES = (128, 256, 512, 1024)
FP32_SIZES = (128, 256, 512, 1024, 2048)
COLLECTIVE_BYTES = 64 * MIB
# planner/comm.py's ring latency: a base of 8.4 µs plus 2(n−1) steps × α for an all-reduce.
RING_BASE_US = 8.4
TOOL = "evaplan profiles measure-cpu"


def _median_time(fn: Callable[[], Any], repeat: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def gemm_tflops(dtype_name: str, sizes: tuple[int, ...], repeat: int) -> dict[str, float]:
    """Dense GEMM rate per square size n: 2·n³ FLOPs per F.linear(x, W) (x @ Wᵀ, what nn.Linear
    runs). On AVX2 without AVX-512 BF16/AMX, bf16 has no native kernel: oneDNN converts to fp32 and
    the rate is ~10× below fp32."""
    import torch
    import torch.nn.functional as F

    dtype = getattr(torch, dtype_name)
    out = {}
    for n in sizes:
        x = torch.randn(n, n).to(dtype)
        w = torch.randn(n, n).to(dtype)
        t = _median_time(lambda x=x, w=w: F.linear(x, w), repeat)
        out[str(n)] = 2.0 * n**3 / t / 1e12
    return out


def copy_gbps(repeat: int) -> float:
    """Bytes read + written per second copying a 256 MiB fp32 tensor (STREAM copy convention)."""
    import torch

    src = torch.ones(256 * MIB // 4)
    dst = torch.empty_like(src)
    t = _median_time(lambda: dst.copy_(src), repeat)
    return 2.0 * src.numel() * 4 / t / 1e9


def adamw_params_per_s(repeat: int) -> float:
    import torch

    p = torch.nn.Parameter(torch.zeros(2**22))
    p.grad = torch.full_like(p, 1e-3)
    opt = torch.optim.AdamW([p], lr=1e-3, foreach=True)
    t = _median_time(opt.step, repeat)
    return p.numel() / t


def file_write_gbps(size_mib: int = 256) -> float:
    data = os.urandom(MIB) * size_mib
    with tempfile.NamedTemporaryFile(dir=tempfile.gettempdir()) as f:
        t0 = time.perf_counter()
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
        t = time.perf_counter() - t0
    return len(data) / t / 1e9


def _rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def _collective_worker(rank: int, world: int, port: int, repeat: int, queue: Any) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    # The figures are for CPU ranks: say so, rather than let DeepSpeed warn that it found no GPU.
    os.environ.setdefault("DS_ACCELERATOR", "cpu")
    warnings.filterwarnings("ignore", category=FutureWarning)  # torch's all_gather_into_tensor notice
    import deepspeed  # noqa: F401  (its import is part of every rank's runtime context)
    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    res: dict[str, float] = {"rss_after_init_bytes": float(_rss_bytes())}
    for op in ("all_reduce", "all_gather"):
        for size in (8, COLLECTIVE_BYTES):
            numel = max(1, size // 4)
            if op == "all_reduce":
                t = torch.ones(numel)

                def call(t=t) -> None:
                    dist.all_reduce(t)
            else:
                inp = torch.ones(max(1, numel // world))
                outp = torch.empty(inp.numel() * world)

                def call(inp=inp, outp=outp) -> None:
                    dist.all_gather_into_tensor(outp, inp)

            dist.barrier()
            secs = _median_time(call, repeat if size > 8 else 50 * repeat, warmup=2)
            res[f"{op}_{size}_s"] = secs
    if rank == 0:
        queue.put(res)
    dist.barrier()
    dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def collectives(world: int, repeat: int, timeout_s: float = 1800.0) -> dict[str, float]:
    """gloo collectives between `world` local processes (spawned; each binds 127.0.0.1 only)."""
    import torch.multiprocessing as mp

    port = _free_port()
    ctx = mp.get_context("spawn")
    queue = ctx.SimpleQueue()
    procs = [
        ctx.Process(target=_collective_worker, args=(r, world, port, repeat, queue)) for r in range(world)
    ]
    for p in procs:
        p.start()
    try:
        for p in procs:
            p.join(timeout=timeout_s)
            if p.exitcode != 0:
                raise RuntimeError(f"a gloo collective worker exited with {p.exitcode}")
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
                p.join()
    res = queue.get()
    ar_factor, ag_factor = 2.0 * (world - 1) / world, (world - 1) / world
    res["all_reduce_busbw_gbps"] = (
        COLLECTIVE_BYTES / res[f"all_reduce_{COLLECTIVE_BYTES}_s"] * ar_factor / 1e9
    )
    res["all_gather_busbw_gbps"] = (
        COLLECTIVE_BYTES / res[f"all_gather_{COLLECTIVE_BYTES}_s"] * ag_factor / 1e9
    )
    res["all_reduce_8B_us"] = res["all_reduce_8_s"] * 1e6
    res["alpha_us"] = max(0.1, (res["all_reduce_8B_us"] - RING_BASE_US) / (2 * (world - 1)))
    return res


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


def host_ram_bytes() -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def measure(ranks: int = 2, threads: int = 1, repeat: int = 5) -> dict[str, Any]:
    """Every figure above, as one dict (benchmarks/measure_cpu.py prints it)."""
    import torch

    torch.set_num_threads(threads)
    out: dict[str, Any] = {
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d"),
        "cpu": cpu_model(),
        "cores": os.cpu_count() or 1,
        "threads_per_rank": threads,
        "ranks": ranks,
        "torch": torch.__version__,
        "gemm_bf16_tflops": gemm_tflops("bfloat16", BF16_SIZES, repeat),
        "gemm_fp32_tflops": gemm_tflops("float32", FP32_SIZES, repeat),
        "copy_rw_gbps": copy_gbps(repeat),
        "adamw_params_per_s": adamw_params_per_s(repeat),
        "file_write_gbps": file_write_gbps(),
        "host_ram_gib": host_ram_bytes() / GIB,
        "disk_tb": shutil.disk_usage(tempfile.gettempdir()).total / 1e12,
        "load_average_1m": os.getloadavg()[0],
    }
    out["collectives"] = collectives(ranks, repeat)
    return out


# ------------------------------------------------------------------------------- the profile it writes
def _fig(value: float, source: str, date: str, digits: int = 4) -> dict[str, Any]:
    return {
        "value": float(f"{value:.{digits}g}"),
        "source": f"measured on this machine by {TOOL}, {date}: {source}",
        "observed": date,
    }


def profile_data(m: dict[str, Any], example: dict[str, Any]) -> dict[str, Any]:
    """The bundled `cpu` profile (the documented example) with every figure this machine measured
    replaced; fields it cannot measure (TDP, power, MFU before calibration, the Kubernetes section)
    keep the example's value and source."""
    d = m["date"]
    c = m["collectives"]
    ranks = int(m["ranks"])
    bf16_size, bf16 = max(m["gemm_bf16_tflops"].items(), key=lambda kv: kv[1])
    fp32_size, fp32 = max(m["gemm_fp32_tflops"].items(), key=lambda kv: kv[1])
    copy_rw = float(m["copy_rw_gbps"])
    data = copy.deepcopy(example)
    data["name"] = "cpu"
    data["display_name"] = f"CPU host ({m['cpu']}, {m['cores']} cores; one rank per core)"
    data["gpus_per_node"] = ranks
    data["hbm_gib"] = _fig(
        m["host_ram_gib"] / ranks,
        f"host RAM {m['host_ram_gib']:.2f} GiB (/proc/meminfo MemTotal) / {ranks} ranks",
        d,
    )
    data["hbm_tbps"] = _fig(
        copy_rw / 1000, f"torch copy_ of 256 MiB, {copy_rw:.2f} GB/s read+write (STREAM copy convention)", d
    )
    data["bf16_dense_tflops"] = {
        **_fig(
            bf16,
            f"best bf16 F.linear rate over square sizes {BF16_SIZES[0]}-{BF16_SIZES[-1]} (n={bf16_size}), "
            f"{m['threads_per_rank']} thread(s) per rank (fp32 reaches {fp32:.3g} TFLOP/s at n={fp32_size})",
            d,
        ),
        "note": "a CPU has no datasheet bf16 peak; the measured GEMM rate stands in for it",
    }
    ar, ag = c["all_reduce_busbw_gbps"], c["all_gather_busbw_gbps"]
    ar_src = f"gloo all-reduce busbw, 64 MiB, {ranks} local ranks over 127.0.0.1 (nccl-tests busbw = algbw × 2(n-1)/n)"
    data["intra_node_link_gbps"] = _fig(ar, ar_src, d)
    coll = dict(data.get("collective") or {})
    coll["intra_node_allreduce_gbps"] = _fig(ar, ar_src, d)
    coll["intra_node_allgather_gbps"] = _fig(
        ag, f"gloo all_gather_into_tensor busbw, 64 MiB, {ranks} local ranks (× (n-1)/n)", d
    )
    coll["inter_node_gbps"] = _fig(
        ar, "a single host has no inter-node path; the loopback all-reduce stands in", d
    )
    alpha_src = (
        f"8 B gloo all-reduce {c['all_reduce_8B_us']:.1f} us = {RING_BASE_US} us base + "
        f"{2 * (ranks - 1)} ring steps × alpha (planner/comm.py latency model)"
    )
    coll["alpha_intra_us"] = _fig(c["alpha_us"], alpha_src, d)
    coll["alpha_inter_us"] = _fig(c["alpha_us"], "the loopback latency stands in (single host)", d)
    data["collective"] = coll
    data["pcie_h2d_gbps"] = _fig(
        copy_rw / 2, f"one-way memory copy ({copy_rw:.2f} GB/s read+write / 2): the device is the host", d
    )
    data["host_ram_gib"] = _fig(m["host_ram_gib"], "/proc/meminfo MemTotal", d)
    data["nvme_tb"] = _fig(m["disk_tb"], "size of the temp-folder file system", d, digits=3)
    data["nvme_write_gbps"] = _fig(m["file_write_gbps"], "256 MiB file write + fsync in the temp folder", d)
    data["cpu_adam_gparams_per_s"] = _fig(
        m["adamw_params_per_s"] / 1e9, "torch.optim.AdamW (foreach, fp32) on 2^22 params, one thread", d
    )
    data["memory_reserved_gib"] = _fig(
        c["rss_after_init_bytes"] / GIB,
        "resident memory of one rank after import torch + deepspeed and a gloo process group",
        d,
    )
    # The per-operation time model's speed figures (planner/ops.py), from the same measurements, so
    # that each stays at or below the datasheet-like bound it is checked against (spec.py).
    copy_src = f"torch copy_ of 256 MiB, {copy_rw:.2f} GB/s read+write (STREAM copy convention)"
    data["hbm_achieved_tbps"] = _fig(copy_rw / 1000, copy_src, d)
    data["tf32_dense_tflops"] = _fig(
        fp32, f"fp32 F.linear rate (n={fp32_size}); a CPU has no TF32, fp32 matmuls stand in", d
    )
    data["host_cpu_cores"] = _fig(m["cores"], "os.cpu_count()", d, digits=6)
    if isinstance(data.get("matmul"), dict):
        mm = dict(data["matmul"])
        mm["tflops"] = _fig(bf16, f"best bf16 F.linear rate over square sizes (n={bf16_size})", d)
        mm["m"] = mm["n"] = mm["k"] = int(bf16_size)
        data["matmul"] = mm
    if isinstance(data.get("attention"), dict):
        att = dict(data["attention"])
        old = float(att["flash_fwd_tflops"]["value"])
        ratio = (
            old / float(example["matmul"]["tflops"]["value"])
            if isinstance(example.get("matmul"), dict)
            else 0.5
        )
        att["flash_fwd_tflops"] = _fig(
            bf16 * ratio,
            f"not measured: the example profile's attention-to-GEMM rate ratio ({ratio:.3g}) times this "
            "machine's bf16 GEMM rate; `evaplan calibrate` corrects it",
            d,
        )
        data["attention"] = att
    return data


def header(m: dict[str, Any]) -> str:
    c = m["collectives"]
    return (
        f"# Written by `{TOOL}` on {m['date']} (load average {m['load_average_1m']:.2f}): {m['cpu']},\n"
        f"# {m['cores']} cores, {m['ranks']} ranks × {m['threads_per_rank']} thread(s), torch {m['torch']}.\n"
        f"# GEMM TFLOP/s per rank, bf16: "
        + ", ".join(f"n={k} {v:.4g}" for k, v in m["gemm_bf16_tflops"].items())
        + "; fp32: "
        + ", ".join(f"n={k} {v:.4g}" for k, v in m["gemm_fp32_tflops"].items())
        + f".\n# gloo all-reduce 8 B: {c['all_reduce_8B_us']:.1f} us. A busy machine measures lower rates;"
        " `evaplan calibrate` corrects the efficiency factors from real runs.\n"
        "# Unmeasured fields (TDP, power, MFU before calibration, kubernetes) are the bundled example's.\n"
    )


def write_profile(m: dict[str, Any], example_path: Path, out_dir: Path) -> Path:
    """Write DIR/hardware/cpu.yaml atomically after validating it as a hardware profile."""
    from pydantic import ValidationError

    from planner import profiles as prof

    example = yaml.safe_load(example_path.read_text(encoding="utf-8"))
    data = profile_data(m, example)
    target = out_dir / "hardware" / "cpu.yaml"
    try:  # refuse a profile the planner could not load (e.g. a zero rate), before writing anything
        prof.KINDS["hardware"].model_validate(data)
    except ValidationError as e:
        raise prof.ProfileError(
            "the measured cpu profile is invalid: " + prof.format_validation_error(target, e),
            hint="rerun on a less busy machine; report the figures if it persists",
        ) from None
    target.parent.mkdir(parents=True, exist_ok=True)
    text = header(m) + yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=200)
    fd, tmp = tempfile.mkstemp(prefix=".cpu.", suffix=".yaml", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target
