"""Build, once and visibly, the DeepSpeed C++ op every CPU run of the trainer loads.

    python -m evaclip.build_ops        # `make dev` runs it

On a host without a GPU, DeepSpeed's communication backend loads its shared-memory collective op
(`ShareMemCommBuilder`, deepspeed/comm/torch.py: build_shm_op) when the process group starts. It is
not shipped compiled: the first run JIT-compiles it with the host's C++ compiler and ninja into the
torch extensions folder ($TORCH_EXTENSIONS_DIR, else ~/.cache/torch_extensions), which takes about
90 s on a 2-core machine and, done inside `evaplan launch --backend local`, looks like a hang. Later
runs load the built library in well under a second. (DeepSpeedCPUAdam, used only when the optimizer is
offloaded, is built the same way on the first offloaded run.)

Exit status 1 with one line if the build fails (usually: no C++ compiler; install g++ or clang).
"""

from __future__ import annotations

import os
import sys
import time

OP = "ShareMemCommBuilder"


def main() -> int:
    from deepspeed.accelerator import get_accelerator
    from torch.utils.cpp_extension import _get_build_directory

    accelerator = get_accelerator()
    builder = accelerator.create_op_builder(OP)
    if builder is None or not builder.is_compatible(verbose=False):
        print(f"DeepSpeed's {OP} does not apply to this host ({accelerator.device_name()}): nothing to build")
        return 0
    name = builder.absolute_name()
    # Where torch's JIT loader puts and finds it: $TORCH_EXTENSIONS_DIR or ~/.cache/torch_extensions/<py_cpu>/.
    build_dir = _get_build_directory(builder.NAME, verbose=False)
    where = os.path.dirname(build_dir)
    library = os.path.join(build_dir, f"{builder.NAME}.so")
    before = os.stat(library).st_mtime_ns if os.path.isfile(library) else None
    # A library already there is not enough: torch's loader runs ninja, which rebuilds it when the
    # command line differs (another virtual environment's include paths, other flags), and that would
    # then happen silently inside the first run. Loading here lets ninja decide, visibly.
    if before is None:
        print(f"building DeepSpeed CPU op {name} (one time, ~90 s on 2 cores) into {where} ...", flush=True)
    else:
        print(
            f"checking DeepSpeed CPU op {name} in {where} (rebuilt, ~90 s, only if another environment "
            "built it) ...",
            flush=True,
        )
    t0 = time.perf_counter()
    # Two tries: another process building the same op into the same folder (a second `make dev`, a
    # local launch) holds torch's build lock; when it is released before that process has linked the
    # library, the waiting loader finds no .so. The second try finds the finished build or builds it.
    for attempt in (1, 2):
        try:
            builder.load(verbose=False)
            break
        except Exception as e:  # the compiler's own output went to the terminal above
            if attempt == 1:
                print(f"retrying the build of {name} once ({type(e).__name__}: {e})", flush=True)
                continue
            print(
                f"error: building {name} failed ({type(e).__name__}: {e}); "
                "it needs a C++ compiler (g++) and ninja"
            )
            return 1
    after = os.stat(library).st_mtime_ns if os.path.isfile(library) else None
    if before is not None and after == before:
        print(f"DeepSpeed CPU op {name} already built ({time.perf_counter() - t0:.0f} s to check)")
    else:
        print(f"built {name} in {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
