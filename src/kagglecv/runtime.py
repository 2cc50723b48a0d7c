"""Process set-up shared by every stage: logging, seeding, the stage entry wrapper, a workspace lock."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import logging
import os
import platform
import random
import re
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch

try:
    import fcntl
except ImportError:  # Windows: no flock; the stage runs unlocked
    fcntl = None

log = logging.getLogger("kagglecv")

# torch.OutOfMemoryError (torch >= 2.5) is what torch.cuda.OutOfMemoryError now names.
OUT_OF_MEMORY: type[Exception] = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)
OUT_OF_MEMORY_FIX = "out of GPU memory: lower batch_size or img_size, or set amp: on"


M_MMAP_MAX = -4  # glibc's mallopt parameter: how many allocations may get pages of their own


def bound_heap() -> None:
    """Serve every allocation from the C heap (Linux, glibc), so batch buffers are reused, not remapped.

    By default glibc gives a large allocation (an activation of a few MB or more) pages of its own
    and unmaps them when it is freed, so the next batch maps and zero-fills them again: measured on
    this project's CPU training at 128 px, a third of the CPU time went to those page faults. Its
    adaptive threshold also lets some of these buffers land in the heap, where their free space
    fragments and grows with every batch: a validation pass over 3,000 images grew the stage's
    anonymous memory by 170 MB. With mapping off, the heap holds one step's working set and reuses
    it: training ran 1.4x faster and the anonymous memory stays flat (tests/test_memory_bound.py).
    """
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt(M_MMAP_MAX, 0)


def trim_heap() -> None:
    """Hand the C heap's free pages back to the system (glibc's `malloc_trim`), between passes whose
    buffers differ in shape (an epoch's training steps, its validation, the next fold): with every
    allocation served from the heap (`bound_heap`), the free space one pass leaves between live blocks
    stays resident otherwise. On the photo benchmark (BENCHMARKS.md) the train stage's anonymous peak
    was 1.63 GB in the first fold and 1.65 GB in the second with it; 1.42-1.65 and 1.62-1.71 GB without."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim(0)


class WorkspaceBusy(RuntimeError):
    """Another process holds the lock of what this one was about to do; the message names it."""


def _holders(fd: int) -> str:
    """The lines of the lock file whose process is still alive (a shared holder's line outlives it)."""
    lines = os.pread(fd, 64 << 10, 0).decode(errors="replace").splitlines()
    alive = [line for line in lines if (m := re.match(r"pid (\d+)", line)) and _alive(int(m[1]))]
    return "; ".join(alive) or "a process that has not named itself yet"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


@contextlib.contextmanager
def workspace_lock(path: Path, what: str, *, shared: bool = False) -> Iterator[None]:
    """Hold the lock file `path` while inside, or raise `WorkspaceBusy` naming the processes that hold it.
    `shared`: any number of shared holders at once, but never beside an exclusive one. The operating
    system releases the lock when its process ends, however it ends (a kill -9 too), so a crashed run
    never blocks the next one."""
    if fcntl is None:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except BlockingIOError:
            holders = _holders(fd)
            os.close(fd)
            raise WorkspaceBusy(
                f"{what} is already running in this workspace: {holders} holds {path}. Two would overwrite each "
                f"other's files (a killed 'dvc repro' leaves its stage running): wait for it, or stop it and rerun"
            ) from None
        if path.exists() and path.stat().st_ino == os.fstat(fd).st_ino:
            break
        os.close(fd)  # the holder removed the file as we opened it: lock the new one
    try:
        if not shared:
            os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_END)
        pid = os.getpid()
        os.write(fd, f"pid {pid}, started {time.strftime('%H:%M:%S')} ('kill {pid}' stops it)\n".encode())
        yield
    finally:
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # the last holder (shared ones may remain)
            path.unlink()
            path.parent.rmdir()  # leave no empty folder behind
        os.close(fd)


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
