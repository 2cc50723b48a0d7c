"""This process's memory: peak resident set, anonymous resident memory now, and its peak over a block;
and the pages of a memory-mapped set it keeps mapped.

Anonymous memory (`RssAnon`) is what a stage allocates itself; pages of a memory-mapped file (the
decode cache) are file-backed and the kernel can drop them, so `RssAnon` is the figure that must
stay bounded on a competition larger than RAM. The mapped pages count in the resident set too
(`RssFile`) for as long as they stay mapped, and on Linux 6.x a read through the map maps the whole
2 MB folio of the page cache around the row it wants. So rows picked at random (batches, single
images) are read from the file (`read_rows`), mapping nothing, and every pass through the map goes
through a `PageBudget`, which unmaps what was read once it could add up to `MAPPED_BYTES`.
"""

from __future__ import annotations

import mmap
import os
import re
import resource
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np

MAPPED_BYTES = 64 << 20  # at most this much of a memory-mapped set stays mapped (RssFile) between releases
# The most one page fault on a file can map at once: a 2 MB (PMD-sized) folio of the page cache on Linux 6.x,
# which keeps large files in large folios; 64 KB of fault-around on older kernels.
MAP_GRANULE = 2 << 20


def peak_rss_mb() -> float:
    """This process's peak resident memory (anonymous and file-backed pages), in MB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def rss_anon_mb() -> float:
    """This process's anonymous resident memory now (`RssAnon`), in MB; 0 where /proc has no such line."""
    return _status_mb("RssAnon")


def rss_file_mb() -> float:
    """This process's file-backed resident memory now (`RssFile`: libraries and mapped files), in MB."""
    return _status_mb("RssFile")


def _status_mb(key: str) -> float:
    status = Path("/proc/self/status")
    found = re.search(rf"{key}:\s+(\d+) kB", status.read_text()) if status.exists() else None
    return int(found.group(1)) / 1024 if found else 0.0


def release_pages(images: np.ndarray) -> None:
    """Unmap the pages of a memory-mapped set this process has read (they stay in the page cache, so
    the next read is a cheap minor fault; written pages stay dirty there until written back): its
    resident memory then counts the rows in hand, not the whole file. No-op for an array in memory."""
    mapped = getattr(images, "_mmap", None)  # numpy.memmap's own mapping, shared by its views; None in memory
    if mapped is not None and hasattr(mmap, "MADV_DONTNEED"):
        mapped.madvise(mmap.MADV_DONTNEED)


def mapped_mb(path: Path) -> float:
    """How much of the file `path` this process has mapped and resident now (its mappings' `Rss` in
    /proc/self/smaps), in MB; 0 where /proc has no smaps."""
    smaps, target, total_kb, inside = Path("/proc/self/smaps"), str(Path(path).resolve()), 0, False
    for line in smaps.read_text().splitlines() if smaps.exists() else []:
        if re.match(r"^[0-9a-f]+-[0-9a-f]+ ", line):  # a mapping's header: range, perms, offset, dev, inode, path
            inside = line.split(maxsplit=5)[5:] == [target]
        elif inside and line.startswith("Rss:"):
            total_kb += int(line.split()[1])
    return total_kb / 1024


def read_rows(images: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """`images[rows]`, a copy in memory. Rows of a whole memory-mapped `.npy` (as `np.load(mmap_mode="r")`
    gives it) are read from its file with `pread`, so none of its pages is mapped; the page cache
    serves them all the same. Of a view of a map (or without `os.preadv`), the pages read are unmapped again.
    Opens the file for this call alone; a `RowReader` keeps it open for many."""
    reader = RowReader(images)
    try:
        return reader.read(rows)
    finally:
        reader.close()


class RowReader:
    """`read_rows` over one set, the file of a memory-mapped `images` opened once per process: on the first
    read in the process that reads (a DataLoader worker forked after it opens its own), closed by `close()`
    or when the reader is collected."""

    def __init__(self, images: np.ndarray) -> None:
        self.images = images
        self._fd, self._pid = -1, 0  # the open file and the process that opened it

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_fd": -1, "_pid": 0}  # a descriptor means nothing in another process

    def __del__(self) -> None:
        self.close()

    def close(self) -> None:
        """Close the file if this process opened it."""
        if self._fd >= 0 and self._pid == os.getpid():
            os.close(self._fd)
        self._fd, self._pid = -1, 0

    def _file(self) -> int:
        if self._pid != os.getpid():
            if self._fd >= 0:
                os.close(self._fd)  # the parent's, inherited through fork: this process's copy only
            self._fd, self._pid = os.open(self.images.filename, os.O_RDONLY), os.getpid()
        return self._fd

    def read(self, rows: np.ndarray) -> np.ndarray:
        """`images[rows]`, a copy in memory, as `read_rows` reads it."""
        images = self.images
        whole_map = isinstance(getattr(images, "base", None), mmap.mmap) and images.flags.c_contiguous
        if not whole_map or not hasattr(os, "preadv"):
            out = np.asarray(images[rows])
            release_pages(images)  # in memory: nothing to do
            return out
        out = np.empty((len(rows), *images.shape[1:]), images.dtype)
        row_bytes = out[0].nbytes if len(out) else 0
        fd = self._file()
        for i, row in enumerate(np.asarray(rows, np.int64).reshape(-1)):
            if not 0 <= row < len(images):
                raise IndexError(f"row {row} is outside the {len(images)} images")
            if os.preadv(fd, [out[i]], images.offset + int(row) * row_bytes) != row_bytes:
                raise OSError(f"{images.filename}: shorter than its header says; delete it to decode again")
        return out


class PageBudget:
    """Keeps what a process has mapped of the memory-mapped `images` (N, ...) under `limit` bytes
    (`MAPPED_BYTES` by default) plus the rows in hand: `read(n)` after reading n rows unmaps them all
    once the rows read since the last release could have mapped `limit` (each row counted with the
    `MAP_GRANULE`s at its ends, so rows read at random count what they may really map)."""

    def __init__(self, images: np.ndarray, limit: int | None = None) -> None:
        self.images, self.limit, self.mapped = images, limit or MAPPED_BYTES, 0
        self.row_bytes = int(np.prod(images.shape[1:])) * images.itemsize

    def read(self, rows: int, *, contiguous: bool = False) -> None:
        """`rows` rows were read; `contiguous`: as one block (granules only at its two ends)."""
        self.mapped += rows * self.row_bytes + 2 * MAP_GRANULE * (1 if contiguous else rows)
        if self.mapped >= self.limit:
            release_pages(self.images)
            self.mapped = 0


def read_blocks(images: np.ndarray, rows: int) -> Iterator[tuple[int, np.ndarray]]:
    """(start, block) for consecutive blocks of `rows` rows of `images` (views: `images[start : start + rows]`),
    a memory-mapped set's pages unmapped as they add up to `MAPPED_BYTES`, so a pass over the whole set keeps
    only about that much of it resident."""
    budget = PageBudget(images)
    for start in range(0, len(images), rows):
        block = images[start : start + rows]
        yield start, block
        budget.read(len(block), contiguous=True)
    release_pages(images)


class ResidentPeak:
    """The peaks of `rss_anon_mb` (`anon_mb`) and `rss_file_mb` (`file_mb`) while the block runs, sampled
    every `every` seconds by a thread."""

    def __init__(self, every: float = 0.05) -> None:
        self.every, self.anon_mb, self.file_mb = every, 0.0, 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.is_set():
            self._measure()
            self._stop.wait(self.every)

    def _measure(self) -> None:
        self.anon_mb, self.file_mb = max(self.anon_mb, rss_anon_mb()), max(self.file_mb, rss_file_mb())

    def __enter__(self) -> ResidentPeak:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._measure()
