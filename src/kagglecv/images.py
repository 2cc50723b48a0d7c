"""The images of a competition part: decoded once, in parallel, into a memory-mapped uint8 cache.

`FileImages.load(img_size=…)` decodes every file with all cores (OpenCV releases the GIL), resizes
it and writes it straight into an `.npy` file opened with `numpy.lib.format.open_memmap`, then
returns that file memory-mapped: (N, S, S, C) uint8 that lives in the page cache, not in the
process's anonymous memory, so a set larger than RAM still trains (batches are gathered from the
map, see `kagglecv.loaders`). At most one full-resolution image per decoding thread exists at a
time. The cache is keyed by the files' content (`kagglecv.fingerprints`: a queued experiment's copy of
the workspace finds it too; worked out once per set, `FileImages.content`), the size and the channel
count, and written atomically, so an interrupted decode leaves no half file.
`ArrayImages` holds images that arrive as pixels (pixel CSVs, the embedded digits).
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import cv2
import numpy as np
from numpy.lib.format import open_memmap
from PIL import Image

from kagglecv import distributed
from kagglecv.artifacts import atomic_path, read_cached_array
from kagglecv.data import CompetitionError, ImageSource
from kagglecv.fingerprints import content_key, entry_key
from kagglecv.memory import PageBudget, read_blocks, release_pages
from kagglecv.params import Params, ParamsError
from kagglecv.progress import Progress

log = logging.getLogger("kagglecv.images")

CHUNK = 64  # images per decoding task, and per block when scanning a decoded set
STATS_CHUNK = 256  # images per block when counting pixel values
# Pillow refuses images above 179 megapixels as possible decompression bombs, naming them corrupt. The
# limit is `data.max_megapixels`, checked from each header before decoding (`kagglecv.ingest.check_image`).
Image.MAX_IMAGE_PIXELS = None


def decode_image(path: Path) -> np.ndarray:
    """One image file as uint8 (H, W, C), C = 1 (grey) or 3 (RGB; alpha dropped)."""
    image = cv2.imdecode(np.fromfile(path, np.uint8), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise CompetitionError(f"{path}: not a readable image (PNG, JPEG, WebP or BMP); replace or remove it")
    if image.dtype == np.uint16:  # 16-bit PNG
        image = (image >> 8).astype(np.uint8)
    elif image.dtype != np.uint8:
        raise CompetitionError(f"{path}: {image.dtype} pixels are not supported; save it as 8-bit")
    if image.ndim == 2:
        return image[..., None]
    if image.shape[2] == 1:
        return image
    code = cv2.COLOR_BGRA2RGB if image.shape[2] == 4 else cv2.COLOR_BGR2RGB
    return cv2.cvtColor(image, code)


def convert_channels(images: np.ndarray, channels: int) -> np.ndarray:
    """(N, H, W, C) uint8 to `channels` channels (0: unchanged); grey <-> RGB by replication or luma."""
    have = images.shape[-1]
    if channels in (0, have):
        return images
    if have == 1:
        return np.repeat(images, channels, axis=-1)
    if channels == 1:
        luma = images[..., :3].astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
        return np.clip(np.rint(luma), 0, 255).astype(np.uint8)[..., None]
    if have == 4 and channels == 3:
        return images[..., :3]
    raise CompetitionError(f"data.channels: cannot turn {have}-channel images into {channels}")


def resize_image(image: np.ndarray, size: int) -> np.ndarray:
    """(H, W, C) uint8 to (size, size, C): area when shrinking, bilinear when growing."""
    h, w, c = image.shape
    if (h, w) == (size, size):
        return image
    interpolation = cv2.INTER_AREA if size < min(h, w) else cv2.INTER_LINEAR
    return cv2.resize(image, (size, size), interpolation=interpolation).reshape(size, size, c)


def resize_images(images: np.ndarray, size: int) -> np.ndarray:
    """(N, H, W, C) uint8 to (N, size, size, C), one image at a time."""
    if images.shape[1:3] == (size, size):
        return images
    out = np.empty((len(images), size, size, images.shape[-1]), np.uint8)
    for i, image in enumerate(images):
        out[i] = resize_image(image, size)
    return out


def decode_into(out: np.ndarray, paths: Sequence[Path], *, desc: str = "decoding", workers: int | None = None) -> bool:
    """Decode `paths` into `out` (N, S, S, C) uint8 in place, with `workers` threads (default: every
    core) and progress; return whether any image has colour. Grey images fill all C channels. A memory-mapped
    `out` keeps only the chunks in hand and `memory.MAPPED_BYTES` of written pages mapped."""
    size, channels = out.shape[1], out.shape[-1]

    def decode_chunk(start: int) -> tuple[int, bool]:
        colour = False
        stop = min(start + CHUNK, len(paths))
        for i in range(start, stop):
            image = resize_image(decode_image(paths[i]), size)
            colour |= image.shape[-1] > 1
            out[i] = convert_channels(image[None], channels)[0]
        return stop - start, colour

    workers = workers or os.cpu_count() or 1
    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)  # one image per thread: OpenCV's own threads would only compete with ours
    budget = PageBudget(out)
    try:
        with Progress(len(paths), desc, unit="img", log=log) as progress, ThreadPoolExecutor(workers) as pool:
            colour = False
            for n, has_colour in pool.map(decode_chunk, range(0, len(paths), CHUNK)):
                colour |= has_colour
                progress.update(n)
                budget.read(n, contiguous=True)
    finally:
        cv2.setNumThreads(threads)
        release_pages(out)
    return colour


def decode_images(paths: Sequence[Path], *, img_size: int, channels: int = 0) -> np.ndarray:
    """uint8 (N, img_size, img_size, C) in memory; `channels` 0: 3 if any image is in colour, else 1."""
    out = np.empty((len(paths), img_size, img_size, channels or 3), np.uint8)
    colour = decode_into(out, paths)
    return np.ascontiguousarray(out[..., :1]) if channels == 0 and not colour else out


def channel_stats(images: np.ndarray) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of uint8 (N, H, W, C) images, in [0, 1] units, exact, from per-channel
    counts of the 256 values taken a block at a time (no float copy of the set)."""
    c = images.shape[-1]
    counts = np.zeros((c, 256), np.int64)
    for _, block in read_blocks(images, STATS_CHUNK):
        block = np.asarray(block).reshape(-1, c)
        for k in range(c):
            counts[k] += np.bincount(block[:, k], minlength=256)
    values = np.arange(256, dtype=np.float64) / 255.0
    n = counts.sum(1)
    mean = counts @ values / n
    var = np.maximum(counts @ values**2 / n - mean**2, 0.0)
    return mean.tolist(), np.maximum(np.sqrt(var), 1e-3).tolist()


def median_side(sizes: np.ndarray) -> int:
    """The median of each image's shorter side; `sizes` is (N, 2) of (height, width)."""
    return int(np.median(sizes.min(1))) if len(sizes) else 0


@dataclass(frozen=True)
class ArrayImages:
    """Images already decoded: uint8 (N, H, W, C)."""

    array: np.ndarray

    def __len__(self) -> int:
        return len(self.array)

    def load(self, *, img_size: int, channels: int = 0) -> np.ndarray:
        return resize_images(convert_channels(self.array, channels), img_size)

    def select(self, indices: list[int]) -> ArrayImages:
        return ArrayImages(self.array[np.asarray(indices, dtype=np.int64)])

    def sizes(self) -> np.ndarray:
        return np.tile(np.asarray(self.array.shape[1:3]), (len(self.array), 1))


@dataclass(frozen=True)
class FileImages:
    """Image files (PNG, JPEG, WebP, BMP; grey, colour or with alpha; any size), decoded and resized
    once per (img_size, channels) into a memory-mapped `.npy` in `cache_dir` (in memory without one)."""

    paths: tuple[Path, ...]
    cache_dir: Path | None = None
    _loaded: dict[tuple[int, int], np.ndarray] = field(default_factory=dict, compare=False, repr=False)

    def __len__(self) -> int:
        return len(self.paths)

    def select(self, indices: list[int]) -> FileImages:
        return FileImages(tuple(self.paths[i] for i in indices), self.cache_dir)

    def load(self, *, img_size: int, channels: int = 0) -> np.ndarray:
        """uint8 (N, img_size, img_size, C), memory-mapped read-only when there is a `cache_dir`."""
        key = (img_size, channels)
        if key not in self._loaded:
            self._loaded[key] = self._load_cached(img_size, channels)
        return self._loaded[key]

    @cached_property
    def content(self) -> str:
        """The files' `fingerprints.content_key`, computed once for every cache entry of the set (sizes,
        decoded images, ingest verdicts)."""
        return content_key(self.paths, self.cache_dir)

    def _digest(self, *extra: object) -> str:
        return entry_key(self.content, *extra)

    def _load_cached(self, img_size: int, channels: int) -> np.ndarray:
        if self.cache_dir is None:
            return decode_images(self.paths, img_size=img_size, channels=channels)
        cached = self.cache_dir / f"images-{self._digest(img_size, channels)}.npy"
        shape = (len(self.paths), img_size, img_size, channels or None)
        found = read_cached_array(cached, shape, mmap=True)
        if found is not None:
            log.info("%d images at %dpx: decoded before, in %s", len(self.paths), img_size, cached)
            return found
        self._write_cache(cached, img_size, channels)
        log.info("%d images at %dpx: decoded into %s", len(self.paths), img_size, cached)
        return np.load(cached, mmap_mode="r")

    def _write_cache(self, cached: Path, img_size: int, channels: int) -> None:
        n = len(self.paths)
        with atomic_path(cached) as tmp:
            wide = tmp.with_name("wide.npy") if channels == 0 else tmp  # 3 channels until the set proves grey
            out = open_memmap(wide, mode="w+", dtype=np.uint8, shape=(n, img_size, img_size, channels or 3))
            colour = decode_into(out, self.paths, desc=f"decoding {n} images to {img_size}px")
            if wide != tmp:
                final = open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(n, img_size, img_size, 3 if colour else 1))
                written = PageBudget(final)
                for start, block in read_blocks(out, CHUNK * 16):
                    final[start : start + len(block)] = block[..., : final.shape[-1]]
                    written.read(len(block), contiguous=True)
                final.flush()
                del final
            out.flush()
            del out

    def sizes(self) -> np.ndarray:
        """(N, 2) int: each image's (height, width), read from the file headers; cached."""
        cached = self.cache_dir / f"sizes-{self._digest('sizes')}.npy" if self.cache_dir else None
        found = read_cached_array(cached, (len(self.paths), 2)) if cached is not None else None
        if found is not None:
            return found
        sizes = np.zeros((len(self.paths), 2), np.int64)
        for i, path in enumerate(self.paths):  # header reads hold the GIL: threads would not help
            with Image.open(path) as image:
                sizes[i] = image.height, image.width
        if cached is not None:
            with atomic_path(cached) as tmp, open(tmp, "wb") as f:
                np.save(f, sizes)
        return sizes


AUTO_SIDES = {"cpu": (16, 32), "gpu": (16, 224)}  # img_size: auto stays in [low, high] for the device kind


def choose_img_size(sizes: np.ndarray, device_type: str) -> int:
    """`img_size: auto`: the training images' median shorter side (native resolution), at least 16 px
    (the default CNN's two poolings need room) and at most 32 px on a CPU (quick) or 224 px on a GPU."""
    low, high = AUTO_SIDES["cpu" if device_type == "cpu" else "gpu"]
    return int(np.clip(median_side(sizes), low, high))


def resolve_sizes(img_size: int | str, cache_size: int, images: ImageSource, device_type: str) -> tuple[int, int]:
    """(img_size, cache side) for training: `auto` chosen from `images`, a cache side of 0 meaning img_size."""
    size = choose_img_size(images.sizes(), device_type) if img_size == "auto" else int(img_size)
    if cache_size and cache_size < size:
        raise ParamsError(f"cache_size: {cache_size} is below img_size {size}; set 0 (decode to img_size) or at least {size}")
    return size, cache_size or size


def with_sizes(params: Params, images: ImageSource) -> Params:
    """`params` with `img_size` (`auto` chosen from `images` and the device) and `cache_size` as numbers."""
    device_type = distributed.device_type(params.devices)
    img_size, cache_size = resolve_sizes(params.img_size, params.cache_size, images, device_type)
    return dataclasses.replace(params, img_size=img_size, cache_size=cache_size)


def decode_set(images: ImageSource, *, img_size: int, channels: int = 0) -> np.ndarray:
    """A few images in memory, without writing a cache for them (e.g. the ones a picture shows)."""
    if isinstance(images, FileImages):
        return decode_images(images.paths, img_size=img_size, channels=channels)
    return images.load(img_size=img_size, channels=channels)
