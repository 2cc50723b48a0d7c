"""Process set-up shared by every stage: logging, seeding, the stage entry wrapper."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import logging
import os
import platform
import random
import sys
from collections.abc import Callable

import numpy as np
import torch

log = logging.getLogger("kagglecv")

# torch.OutOfMemoryError (torch >= 2.5) is what torch.cuda.OutOfMemoryError now names.
OUT_OF_MEMORY: type[Exception] = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)
OUT_OF_MEMORY_FIX = "out of GPU memory: lower batch_size or img_size, or set amp: on"


M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter
MMAP_THRESHOLD = 128 * 1024  # bytes: buffers this large or larger get pages of their own, returned when freed


def bound_heap() -> None:
    """Keep freed batch buffers from piling up in the C heap (Linux, glibc).

    glibc serves a large allocation with pages of its own and returns them on free, but after such a
    free it raises that threshold to the freed size, so later batch-sized buffers (a few MB each) come
    from the heap, whose free space fragments and is kept: measured, the anonymous memory of one
    validation pass over 3,000 images grew by 170 MB, and by the size of the set on larger ones.
    Fixing the threshold (which also turns that adjustment off) keeps it flat (8 MB in the same pass).
    """
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)


def setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", datefmt="%H:%M:%S")


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch so a run with the same params repeats exactly on the CPU."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    os.environ.setdefault("PYTHONHASHSEED", str(seed))


def use_deterministic_algorithms(on: bool) -> None:
    """The `deterministic` param: PyTorch's deterministic kernels (slower on GPU), or the fastest ones.

    On: an op with no deterministic CUDA kernel (e.g. adaptive average pooling's backward) warns,
    naming itself, rather than stopping the run; cuBLAS needs its workspace fixed before its first
    use. Off: cuDNN times its convolution algorithms for the (fixed) input shape and picks the
    fastest, and float32 matrix products use TF32 on GPUs that have it (Ampere and later), as timm's
    training script does. Neither changes a CPU result.
    """
    if on:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(on, warn_only=True)
    torch.backends.cudnn.deterministic = on
    torch.backends.cudnn.benchmark = not on
    torch.backends.cudnn.allow_tf32 = not on
    torch.backends.cuda.matmul.allow_tf32 = not on


def main_of(run_stage: Callable[[], object], *errors: type[Exception]) -> Callable[[], None]:
    """A stage's `main`: run it, and turn the expected errors into one line on stderr and exit 1.

    Running out of GPU memory is expected in every stage; its message names the knobs that fix it.
    """

    def main() -> None:
        setup_logging()
        bound_heap()
        try:
            run_stage()
        except errors as err:
            print(f"error: {err}", file=sys.stderr)
            raise SystemExit(1) from None
        except OUT_OF_MEMORY as err:
            first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            print(f"error: {OUT_OF_MEMORY_FIX} ({first_line})", file=sys.stderr)
            raise SystemExit(1) from None

    return main
