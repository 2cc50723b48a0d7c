"""A competition on disk, read into one uniform description whatever its layout.

`kagglecv.ingest.read_competition(root)` returns the `Competition` defined here: training ids and labels (as the files spell
them), test ids in the sample submission's order, where the sample submission (and, for closed
competitions, the solution) lives, and the images of both parts as `ImageSource`s that load
into uint8 arrays (N, img_size, img_size, C) (`kagglecv.images`). Stages see only this description, so a new layout
plugs in (in `layouts.py`) without touching them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import pandas as pd

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

    def sizes(self) -> np.ndarray:
        """(N, 2) int: each image's (height, width) as stored."""
        ...


@dataclass(frozen=True)
class IngestProblem:
    """One finding of the ingest checks: a row of `data/ingest_report.csv`."""

    part: str  # train | test | unused
    file: str  # the image or CSV at fault, relative to the competition's folder
    id: str  # the image's id ('' for a file nothing refers to)
    problem: str
    action: str = "stop"  # excluded (a training image left out) | stop | ignored | merged | converted (a label)


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
    label_columns: tuple[str, ...] = ()  # a labels CSV with one 0/1 column per label: their names (labels are tags)
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


def read_folds(path: Path) -> pd.DataFrame:
    """data/folds.csv: id (text), label (text), fold (int; `TRAIN_ONLY_FOLD` for rows no model validates on)."""
    if not path.exists():
        raise CompetitionError(f"{path} missing: run 'dvc repro split' first")
    return pd.read_csv(path, dtype={"id": str, "label": str, "fold": int}, keep_default_na=False)
