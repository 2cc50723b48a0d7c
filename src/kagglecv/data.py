"""A competition on disk, read into one uniform description whatever its layout.

`read_competition(root)` returns a `Competition`: training ids and labels (as the files spell
them), test ids in the sample submission's order, where the sample submission (and, for closed
competitions, the solution) lives, and the images of both parts as `ImageSource`s that load
into uint8 arrays (N, img_size, img_size, C). Stages see only this description, so a new layout
plugs in here without touching them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np
import pandas as pd

RAW_DIR = Path("data/raw")
FOLDS_FILE = Path("data/folds.csv")


class CompetitionError(ValueError):
    """The competition's files are missing or inconsistent; the message names the file."""


class ImageSource(Protocol):
    def __len__(self) -> int: ...

    def load(self, *, img_size: int, channels: int = 0) -> np.ndarray:
        """uint8 (N, img_size, img_size, C); `channels` 0 keeps the data's own count."""
        ...


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


def find_sample_submission(root: Path) -> Path:
    """The sample submission: `sample_submission*.csv` or `sampleSubmission*.csv`, any case."""
    found = sorted(p for p in root.rglob("*.csv") if p.stem.lower().replace("_", "").startswith("samplesubmission"))
    if not found:
        raise CompetitionError(f"{root}: no sample submission CSV found (expected sample_submission.csv)")
    return found[0]


def read_ids(csv_path: Path) -> list[str]:
    """The first column of `csv_path`, read as text so ids such as '0001' keep their spelling."""
    return pd.read_csv(csv_path, dtype=str, keep_default_na=False).iloc[:, 0].tolist()


def _pixel_columns(frame: pd.DataFrame, path: Path) -> list[str]:
    columns = [c for c in frame.columns if str(c).lower().startswith("pixel")]
    if not columns:
        raise CompetitionError(f"{path}: no pixel0..pixelN columns")
    return columns


def pixels_to_images(frame: pd.DataFrame, columns: list[str], path: Path) -> np.ndarray:
    """Rows of pixel columns -> uint8 (N, H, W, C); square grey, or square colour when N = 3 * side**2."""
    n_pixels = len(columns)
    side = math.isqrt(n_pixels)
    channels = 1
    if side * side != n_pixels:
        side = math.isqrt(n_pixels // 3)
        channels = 3
        if 3 * side * side != n_pixels:
            raise CompetitionError(f"{path}: {n_pixels} pixel columns form no square image")
    values = frame[columns].to_numpy()
    if values.min() < 0 or values.max() > 255:
        raise CompetitionError(f"{path}: pixel values must lie in 0..255")
    images = values.astype(np.uint8).reshape(len(frame), channels, side, side)
    return np.ascontiguousarray(images.transpose(0, 2, 3, 1))  # (N, C, H, W) -> (N, H, W, C)


def read_pixel_csv(root: Path) -> Competition:
    """Digit Recognizer's layout: train.csv (label + pixel columns), test.csv (pixels), sample_submission.csv."""
    train_path, test_path = root / "train.csv", root / "test.csv"
    for path in (train_path, test_path):
        if not path.exists():
            raise CompetitionError(f"{path} missing: the pixel-CSV layout needs train.csv and test.csv")
    train = pd.read_csv(train_path)
    test = pd.read_csv(test_path)
    label_column = next((c for c in train.columns if c.lower() == "label"), None)
    if label_column is None:
        raise CompetitionError(f"{train_path}: no 'label' column")
    columns = _pixel_columns(train, train_path)
    sample = find_sample_submission(root)
    test_ids = read_ids(sample)
    if len(test_ids) != len(test):
        raise CompetitionError(f"{sample}: {len(test_ids)} ids but {test_path} has {len(test)} rows")
    solution = root / "solution.csv"
    return Competition(
        root=root,
        train_ids=[str(i) for i in range(len(train))],
        train_labels=pd.read_csv(train_path, usecols=[label_column], dtype=str)[label_column].tolist(),
        test_ids=test_ids,
        sample_submission=sample,
        solution=solution if solution.exists() else None,
        train_images=ArrayImages(pixels_to_images(train, columns, train_path)),
        test_images=ArrayImages(pixels_to_images(test, _pixel_columns(test, test_path), test_path)),
    )


LAYOUTS: dict[str, Callable[[Path], Competition]] = {"pixel_csv": read_pixel_csv}


def detect_layout(root: Path) -> str:
    if (root / "train.csv").exists() and (root / "test.csv").exists():
        return "pixel_csv"
    raise CompetitionError(f"{root}: no known competition layout found; set data.layout (one of {', '.join(LAYOUTS)})")


def read_competition(root: Path = RAW_DIR, layout: str = "auto") -> Competition:
    """Read the competition under `root` in `layout` (auto: detected from the files)."""
    if not root.exists():
        raise CompetitionError(f"{root} missing: run 'dvc repro download' first")
    name = detect_layout(root) if layout == "auto" else layout
    if name not in LAYOUTS:
        raise CompetitionError(f"data.layout: {name!r} is not supported yet; choose one of {', '.join(LAYOUTS)}")
    return LAYOUTS[name](root)


def read_folds(path: Path = FOLDS_FILE) -> pd.DataFrame:
    """data/folds.csv: id (text), label (text), fold (int)."""
    if not path.exists():
        raise CompetitionError(f"{path} missing: run 'dvc repro split' first")
    return pd.read_csv(path, dtype={"id": str, "label": str, "fold": int}, keep_default_na=False)
