"""Which training precisions DeepSpeed can run on this CPU.

DeepSpeed's CPU accelerator (deepspeed/accelerator/cpu_accelerator.py, `CPU_Accelerator.is_fp16_supported`
and `supported_dtypes`, DeepSpeed 0.19) accepts fp32 and bf16 on every CPU (oneDNN converts bf16 to
fp32 where the CPU has no AVX-512 BF16/AMX: slow, but correct) and fp16 only where oneDNN has fp16
kernels (`torch.ops.mkldnn._is_mkldnn_fp16_supported()`: AVX-512 FP16 or AMX-FP16, e.g. Intel Sapphire
Rapids; not AMD EPYC Zen 2-4). Elsewhere `deepspeed.initialize` stops with "Type fp16 is not supported
on your device". The trainer asks here first to say so in one line; the tests ask here to skip a case
with the reason and run the same property in a precision the CPU has.
"""

from __future__ import annotations


def cpu_precision_unsupported(precision: str) -> str | None:
    """Why DeepSpeed cannot train in `precision` ("fp32" | "bf16" | "fp16") on this CPU, or None."""
    if precision != "fp16":
        return None
    import torch

    try:
        ok = bool(torch.ops.mkldnn._is_mkldnn_fp16_supported())
    except (AttributeError, RuntimeError):  # a torch built without oneDNN: DeepSpeed says False too
        ok = False
    if ok:
        return None
    return (
        "this CPU has no oneDNN fp16 kernels (torch.ops.mkldnn._is_mkldnn_fp16_supported() is False: "
        "no AVX-512 FP16/AMX-FP16), so DeepSpeed's CPU accelerator refuses fp16"
    )
