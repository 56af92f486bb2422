"""Measure this CPU host for the `cpu` hardware profile and print the figures (the same measurement
`evaplan profiles measure-cpu` writes as a user profile; launcher/measure_cpu.py says what each is).

    .venv/bin/python benchmarks/measure_cpu.py [--ranks 2] [--threads 1] [--repeat 5] [--json]

The host is a shared 2-core VM: other processes compete for the cores, so figures are noisy (±20 %
between runs is usual); the repeat median damps that, and `evaplan calibrate` corrects the rest.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from launcher.measure_cpu import measure
from planner.units import GIB


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ranks", type=int, default=2, help="local ranks (the profile's gpus_per_node)")
    ap.add_argument(
        "--threads", type=int, default=1, help="threads per rank (the local backend's OMP_NUM_THREADS)"
    )
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of lines")
    a = ap.parse_args(argv)
    out = measure(ranks=a.ranks, threads=a.threads, repeat=a.repeat)
    if a.json:
        print(json.dumps(out, indent=2))
        return 0
    bf16, fp32 = out["gemm_bf16_tflops"], out["gemm_fp32_tflops"]
    c = out["collectives"]
    print(
        f"host: {out['cpu']} ({out['cores']} cores), {a.ranks} ranks × {a.threads} thread(s), torch {out['torch']}, {out['date']}, "
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


if __name__ == "__main__":
    sys.exit(main())
