"""Measure this CPU host the way a GPU datasheet and nccl-tests describe a GPU node, for the `cpu`
hardware profile (profiles/hardware/cpu.yaml): one "GPU" is one local rank of `evaplan launch
--backend local`, i.e. one process with OMP_NUM_THREADS=1 (what the local backend sets).

    .venv/bin/python benchmarks/measure_cpu.py [--ranks 2] [--threads 1] [--repeat 5] [--json]

Prints, per rank:
- dense GEMM TFLOP/s in bf16 and fp32 (F.linear on square matrices per size, median of repeats);
- memory copy GB/s (torch copy_ of a 256 MiB tensor; bytes read + bytes written per second, the
  STREAM "copy" convention, comparable to a GPU's HBM TB/s) and one-way copy GB/s (what
  offload's host↔device figure means on a host whose device is the host);
- gloo all-reduce and all-gather bus bandwidth between `--ranks` local processes (nccl-tests
  PERFORMANCE.md: busbw = algbw × 2(n−1)/n for all-reduce, × (n−1)/n for all-gather; 64 MiB
  messages) and the small-message latency (8 B all-reduce);
- the resident memory of one rank after `import torch, deepspeed` and a gloo process group (the
  runtime context a rank pays before any tensor: memory_reserved_gib);
- AdamW throughput (torch.optim.AdamW foreach, fp32, 2^22 parameters) in parameters per second;
- file write GB/s with fsync in the temp folder (the checkpoint/NVMe figure), host RAM and disk.

The host is a shared 2-core VM: other processes compete for the cores, so figures are noisy (±20 %
between runs is usual); the repeat median damps that, and `evaplan calibrate` corrects the rest.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

MIB = 2**20
GIB = 2**30


def _median_time(fn: Any, repeat: int, warmup: int = 1) -> float:
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
    runs). On AVX2 without AVX-512 BF16/AMX, bf16 has no native kernel: oneDNN converts to fp32
    and the rate is ~10× below fp32 (a plain torch.mm in bf16 is slower still)."""
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
    import deepspeed  # noqa: F401  (its import is part of every rank's runtime context)
    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    rss = _rss_bytes()
    res: dict[str, float] = {"rss_after_init_bytes": float(rss)}
    for op in ("all_reduce", "all_gather"):
        for size in (8, 64 * MIB):
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


def collectives(world: int, repeat: int) -> dict[str, float]:
    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    queue = ctx.SimpleQueue()
    procs = [
        ctx.Process(target=_collective_worker, args=(r, world, port, repeat, queue)) for r in range(world)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=600)
        if p.exitcode != 0:
            raise SystemExit(f"error: collective worker exited with {p.exitcode}")
    res = queue.get()
    size = 64 * MIB
    ar_factor, ag_factor = 2.0 * (world - 1) / world, (world - 1) / world
    res["all_reduce_busbw_gbps"] = size / res[f"all_reduce_{size}_s"] * ar_factor / 1e9
    res["all_gather_busbw_gbps"] = size / res[f"all_gather_{size}_s"] * ag_factor / 1e9
    # planner/comm.py's ring latency: base 8.4 µs + 2(n−1) steps × α for an all-reduce.
    res["all_reduce_8B_us"] = res["all_reduce_8_s"] * 1e6
    res["alpha_us"] = max(0.1, (res["all_reduce_8B_us"] - 8.4) / (2 * (world - 1)))
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ranks", type=int, default=2, help="local ranks (the profile's gpus_per_node)")
    ap.add_argument(
        "--threads", type=int, default=1, help="threads per rank (the local backend's OMP_NUM_THREADS)"
    )
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of lines")
    a = ap.parse_args(argv)

    import torch

    torch.set_num_threads(a.threads)
    mem_total = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            mem_total = int(line.split()[1]) * 1024
    out: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d", time.gmtime()),
        "cpu": _cpu_model(),
        "threads_per_rank": a.threads,
        "ranks": a.ranks,
        "torch": torch.__version__,
        "gemm_bf16_tflops": gemm_tflops("bfloat16", (128, 256, 512, 1024), a.repeat),
        "gemm_fp32_tflops": gemm_tflops("float32", (128, 256, 512, 1024, 2048), a.repeat),
        "copy_rw_gbps": copy_gbps(a.repeat),
        "adamw_params_per_s": adamw_params_per_s(a.repeat),
        "file_write_gbps": file_write_gbps(),
        "host_ram_gib": mem_total / GIB,
        "disk_tb": shutil.disk_usage(tempfile.gettempdir()).total / 1e12,
        "load_average_1m": os.getloadavg()[0],
    }
    out["collectives"] = collectives(a.ranks, a.repeat)
    if a.json:
        print(json.dumps(out, indent=2))
        return 0
    bf16, fp32 = out["gemm_bf16_tflops"], out["gemm_fp32_tflops"]
    c = out["collectives"]
    print(
        f"host: {out['cpu']}, {a.ranks} ranks × {a.threads} thread(s), torch {out['torch']}, {out['date']}, "
        f"load average {out['load_average_1m']:.2f}"
    )
    print("GEMM bf16 TFLOP/s per rank: " + ", ".join(f"n={k} {v:.4f}" for k, v in bf16.items()))
    print("GEMM fp32 TFLOP/s per rank: " + ", ".join(f"n={k} {v:.4f}" for k, v in fp32.items()))
    print(
        f"memory copy: {out['copy_rw_gbps']:.2f} GB/s read+write ({out['copy_rw_gbps'] / 2:.2f} GB/s one way)"
    )
    print(
        f"gloo all-reduce 64 MiB: busbw {c['all_reduce_busbw_gbps']:.3f} GB/s; all-gather 64 MiB: busbw "
        f"{c['all_gather_busbw_gbps']:.3f} GB/s; all-reduce 8 B: {c['all_reduce_8B_us']:.1f} us "
        f"(alpha {c['alpha_us']:.1f} us per ring step)"
    )
    print(f"rank RSS after import torch+deepspeed and gloo init: {c['rss_after_init_bytes'] / GIB:.3f} GiB")
    print(f"AdamW (torch foreach, fp32): {out['adamw_params_per_s'] / 1e9:.4f} Gparams/s")
    print(
        f"file write + fsync: {out['file_write_gbps']:.2f} GB/s; host RAM {out['host_ram_gib']:.1f} GiB; "
        f"disk {out['disk_tb']:.3f} TB"
    )
    return 0


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


if __name__ == "__main__":
    sys.exit(main())
