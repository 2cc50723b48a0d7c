"""Writing artifacts so a crash at any moment leaves the old file or the new one, never half of one; and
reading caches that something else may have damaged (a full disk, a copy cut short): a cache file that
does not load is deleted and built again, never fatal."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
import torch

log = logging.getLogger("kagglecv.artifacts")


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success rename it over `path` (file or folder).

    The temporary sits in a hidden folder beside `path` (same filesystem, so the rename is atomic)
    and is flushed to disk before the rename, so even a power cut leaves the old file or the new one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent)) / path.name
    try:
        yield tmp
        if tmp.is_file():
            _fsync(tmp)
        if path.is_dir() and not path.is_symlink():  # two renames: a crash between them leaves the old folder in tmp
            old = tmp.parent / (path.name + ".old")
            os.replace(path, old)
            os.replace(tmp, path)
        else:
            os.replace(tmp, path)
        _fsync_dir(path.parent)
    finally:
        shutil.rmtree(tmp.parent, ignore_errors=True)


def _fsync(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    """Make a rename inside `path` durable (POSIX); a filesystem that cannot sync a folder costs durability only."""
    if os.name != "posix":
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)


def write_json(path: Path, data: dict) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")


def write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_csv(path: Path, frame: pd.DataFrame, **kwargs) -> None:
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False, lineterminator="\n", **kwargs)


def write_checkpoint(path: Path, checkpoint: dict) -> None:
    with atomic_path(path) as tmp:
        torch.save(checkpoint, tmp)


def _rebuilding(path: Path, err: Exception) -> None:
    why = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    log.warning("%s does not load (%s); building it again", path, why)
    path.unlink(missing_ok=True)


def read_cached_json(path: Path) -> dict | None:
    """A cached JSON mapping, or None when there is none or it does not load (then deleted, and logged)."""
    if not path.exists():
        return None
    try:
        found = json.loads(path.read_text())
        if isinstance(found, dict):
            return found
        raise ValueError(f"a mapping was expected, not {type(found).__name__}")
    except (ValueError, OSError) as err:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        _rebuilding(path, err)
        return None


def read_cached_array(path: Path, shape: tuple[int | None, ...], *, mmap: bool = False) -> np.ndarray | None:
    """A cached `.npy` of `shape` (None: any length on that axis), memory-mapped read-only if `mmap`; None
    when there is none or it does not load or has another shape (then deleted, and logged)."""
    if not path.exists():
        return None
    try:
        array = np.load(path, mmap_mode="r" if mmap else None)
        if array.ndim != len(shape) or any(want not in (None, got) for want, got in zip(shape, array.shape)):
            raise ValueError(f"shape {array.shape}, expected {shape}")
        return array
    except (ValueError, OSError, EOFError) as err:  # truncated, damaged header, not an .npy
        _rebuilding(path, err)
        return None
