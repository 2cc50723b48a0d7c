"""A competition on disk, read into one uniform description whatever its layout.

`read_competition(root)` returns a `Competition`: training ids and labels (as the files spell
them), test ids in the sample submission's order, where the sample submission (and, for closed
competitions, the solution) lives, and the images of both parts as `ImageSource`s that load
into uint8 arrays (N, img_size, img_size, C). Stages see only this description, so a new layout
plugs in (in `layouts.py`) without touching them.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np
import pandas as pd

from kagglecv.artifacts import atomic_path

RAW_DIR = Path("data/raw")
FOLDS_FILE = Path("data/folds.csv")
INGEST_REPORT = Path("data/ingest_report.csv")
CACHE_DIR_NAME = "cache"  # decoded images live in data/cache/, beside data/raw/
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
TRAIN_ONLY_FOLD = -1  # folds.csv: trained on by every model, validated by none (a holdout split's training rows)


class CompetitionError(ValueError):
    """The competition's files are missing or inconsistent; the message names the file."""


class ImageSource(Protocol):
    def __len__(self) -> int: ...

    def load(self, *, img_size: int, channels: int = 0) -> np.ndarray:
        """uint8 (N, img_size, img_size, C); `channels` 0 keeps the data's own count."""
        ...

    def select(self, indices: list[int]) -> ImageSource:
        """The images at `indices`, in that order."""
        ...


@dataclass(frozen=True)
class IngestProblem:
    """One finding of the ingest checks: a row of `data/ingest_report.csv`."""

    part: str  # train | test | unused
    file: str  # the image or CSV at fault, relative to the competition's folder
    id: str  # the image's id ('' for a file nothing refers to)
    problem: str
    action: str = "stop"  # excluded (a training image left out) | stop | ignored


@dataclass(frozen=True)
class Competition:
    root: Path
    train_ids: list[str]
    train_labels: list[str]  # as spelled in the competition's files
    test_ids: list[str]  # the sample submission's ids, as text, in its order
    sample_submission: Path
    solution: Path | None
    train_images: ImageSource
    test_images: ImageSource
    valid_ids: frozenset[str] = frozenset()  # training ids the competition ships as a validation folder
    labels_file: Path | None = None  # the CSV naming the training images and their labels, if any
    unusable_train: dict[int, str] = field(default_factory=dict)  # row -> why, as the layout reader found it
    unusable_test: dict[int, str] = field(default_factory=dict)  # e.g. a sample submission id with no image
    unreferenced: tuple[Path, ...] = ()  # image files no CSV refers to
    problems: tuple[IngestProblem, ...] = ()  # every finding of the ingest checks (kagglecv.ingest)

    @property
    def classes(self) -> list[str]:
        return sort_labels(set(self.train_labels))


def sort_labels(labels: set[str] | list[str]) -> list[str]:
    """Class order: numerically when every label is a number (so '10' follows '9'), else as text."""
    labels = list(set(labels))
    try:
        return sorted(labels, key=float)
    except ValueError:
        return sorted(labels)


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


@dataclass(frozen=True)
class FileImages:
    """Image files (PNG, JPEG, WebP, BMP; grey, colour or with alpha; any size), decoded and resized
    once per (img_size, channels): kept in memory and, with `cache_dir`, as an .npy keyed by the
    files' paths, sizes and modification times."""

    paths: tuple[Path, ...]
    cache_dir: Path | None = None
    _loaded: dict[tuple[int, int], np.ndarray] = field(default_factory=dict, compare=False, repr=False)

    def __len__(self) -> int:
        return len(self.paths)

    def select(self, indices: list[int]) -> FileImages:
        return FileImages(tuple(self.paths[i] for i in indices), self.cache_dir)

    def load(self, *, img_size: int, channels: int = 0) -> np.ndarray:
        key = (img_size, channels)
        if key not in self._loaded:
            self._loaded[key] = self._load_cached(img_size, channels)
        return self._loaded[key]

    def _load_cached(self, img_size: int, channels: int) -> np.ndarray:
        if self.cache_dir is None:
            return decode_images(self.paths, img_size=img_size, channels=channels)
        digest = hashlib.sha1(f"{img_size} {channels}".encode())
        for path in self.paths:
            stat = path.stat()
            digest.update(f"\n{path.resolve()} {stat.st_size} {stat.st_mtime_ns}".encode())
        cached = self.cache_dir / f"images-{digest.hexdigest()[:16]}.npy"
        if cached.exists():
            return np.load(cached)
        images = decode_images(self.paths, img_size=img_size, channels=channels)
        with atomic_path(cached) as tmp, open(tmp, "wb") as f:
            np.save(f, images)
        return images


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


def decode_images(paths: tuple[Path, ...] | list[Path], *, img_size: int, channels: int = 0) -> np.ndarray:
    """uint8 (N, img_size, img_size, C); `channels` 0: 3 if any image is in colour, else 1."""
    resized = [resize_images(decode_image(p)[None], img_size) for p in paths]  # each (1, S, S, C)
    if channels == 0:
        channels = max((r.shape[-1] for r in resized), default=1)
    out = np.empty((len(resized), img_size, img_size, channels), np.uint8)
    for i, image in enumerate(resized):
        out[i] = convert_channels(image, channels)[0]
    return out


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


def resize_images(images: np.ndarray, img_size: int) -> np.ndarray:
    """Resize (N, H, W, C) uint8 to (N, img_size, img_size, C): area when shrinking, bilinear when growing."""
    n, h, w, c = images.shape
    if (h, w) == (img_size, img_size):
        return images
    interpolation = cv2.INTER_AREA if img_size < min(h, w) else cv2.INTER_LINEAR
    out = np.empty((n, img_size, img_size, c), np.uint8)
    for i in range(n):
        resized = cv2.resize(images[i], (img_size, img_size), interpolation=interpolation)
        out[i] = resized.reshape(img_size, img_size, c)
    return out


def find_sample_submission(root: Path, test_keys: set[str] | None = None) -> Path:
    """The sample submission: `sample_submission*.csv` / `sampleSubmission*.csv` (any case), or else
    the one CSV whose first column holds only test ids (`test_keys`: test file names and stems)."""
    csvs = sorted(p for p in root.rglob("*.csv") if p.name != "solution.csv")
    named = [p for p in csvs if p.stem.lower().replace("_", "").startswith("samplesubmission")]
    if named:
        return named[0]
    if test_keys:
        for path in csvs:
            ids = read_ids(path)
            if ids and all(i in test_keys for i in ids) and pd.read_csv(path, nrows=0).shape[1] >= 2:
                return path
    raise CompetitionError(f"{root}: no sample submission CSV found (expected sample_submission.csv)")


def read_ids(csv_path: Path) -> list[str]:
    """The first column of `csv_path`, read as text so ids such as '0001' keep their spelling."""
    return pd.read_csv(csv_path, dtype=str, keep_default_na=False).iloc[:, 0].tolist()


def read_competition(
    root: Path = RAW_DIR, layout: str = "auto", *, bad_images: str = "skip", check_images: bool = True
) -> Competition:
    """Read the competition under `root` in `layout` (auto: detected from the files) and run the ingest
    checks (`kagglecv.ingest`): unusable training images are left out (`bad_images: skip`) or stop it
    (`stop`), a problem with the test set always does. `check_images` False skips decoding the images."""
    from kagglecv.ingest import inspect_competition  # builds on this module's types, as do the readers
    from kagglecv.layouts import LAYOUTS, detect_layout

    if not root.exists():
        raise CompetitionError(f"{root} missing: run 'dvc repro download' first")
    name = detect_layout(root) if layout == "auto" else layout
    if name not in LAYOUTS:
        raise CompetitionError(f"data.layout: {name!r} is not supported; choose one of auto, {', '.join(LAYOUTS)}")
    return inspect_competition(LAYOUTS[name](root), bad_images=bad_images, check_images=check_images)


def read_folds(path: Path = FOLDS_FILE) -> pd.DataFrame:
    """data/folds.csv: id (text), label (text), fold (int; `TRAIN_ONLY_FOLD` for rows no model validates on)."""
    if not path.exists():
        raise CompetitionError(f"{path} missing: run 'dvc repro split' first")
    return pd.read_csv(path, dtype={"id": str, "label": str, "fold": int}, keep_default_na=False)
