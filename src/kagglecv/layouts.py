"""How Kaggle image competitions arrange their files, each read into one `Competition`.

- `pixel_csv`: `train.csv` (label + pixel columns), `test.csv` (pixels) — Digit Recognizer, Fashion-MNIST.
- `labels_csv`: `train/` or `images/` plus a CSV mapping id (file name, with or without extension)
  to a label — CIFAR-10's `trainLabels.csv`, Dog Breed Identification's `labels.csv`.
- `class_folders`: `train/<class>/*.png`, `test/*.png` — Plant Seedlings.
- `label_in_name`: `train|training/<label>_<n>.jpg`, optional `valid|validation/` alike, `test/` — Food-11.

Training ids are the labels CSV's ids, or else the image's path relative to the competition root
(`train/Black-grass/0050f38b3.png`), which stays unique across folders. Test ids are the sample
submission's, matched to the files in `test/` by name or stem, or to the rows of a pixel CSV's
`test.csv` by its id column (named like the sample's, or id, ImageId); only a `test.csv` without
one is paired with the sample submission by row position, and the log says so.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from kagglecv.data import (
    CACHE_DIR_NAME,
    IMAGE_SUFFIXES,
    Competition,
    CompetitionError,
    find_sample_submission,
    read_ids,
)
from kagglecv.fingerprints import shared_cache_dir
from kagglecv.images import ArrayImages, FileImages

TRAIN_DIRS = ("train", "training", "images")
VALID_DIRS = ("valid", "validation")
ID_COLUMNS = ("id", "imageid", "image_id")  # besides the sample submission's own id column, any case
LABEL_COLUMNS = ("label", "labels", "class", "category", "breed", "species", "target", "tags")
_LABEL_IN_NAME = re.compile(r"^(?P<label>.+)_(?P<n>\d+)$")  # <label>_<n>, the stem of e.g. 3_127.jpg

log = logging.getLogger("kagglecv.layouts")


def list_images(folder: Path) -> list[Path]:
    """Image files directly in `folder`, sorted by name."""
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _keys(paths: list[Path]) -> dict[str, Path]:
    """Each file by its name and by its stem, so ids may come with or without the extension."""
    return {**{p.stem: p for p in paths}, **{p.name: p for p in paths}}


def _match(ids: list[str], keys: dict[str, Path], folder: Path) -> tuple[list[Path], dict[int, str]]:
    """The file for each id, and row -> why for ids with none (their path is a stand-in, never read)."""
    paths, missing = [], {}
    for i, image_id in enumerate(ids):
        if image_id in keys:
            paths.append(keys[image_id])
        else:
            paths.append(folder / Path(image_id).name)
            missing[i] = f"no image file for id {image_id!r} in {folder.name}/"
    return paths, missing


def _unused(files: list[Path], used: list[Path]) -> tuple[Path, ...]:
    used_set = set(used)
    return tuple(p for p in files if p not in used_set)


def _first_dir(root: Path, names: tuple[str, ...]) -> Path | None:
    return next((root / n for n in names if (root / n).is_dir()), None)


def _cache_dir(root: Path) -> Path:
    return shared_cache_dir(root.parent / CACHE_DIR_NAME)


def _solution(root: Path) -> Path | None:
    return root / "solution.csv" if (root / "solution.csv").exists() else None


@dataclass(frozen=True)
class _TestPart:
    sample: Path
    ids: list[str]
    images: FileImages
    missing: dict[int, str]  # sample submission row -> why it has no image
    unused: tuple[Path, ...]  # files in test/ the sample submission does not list


def _test_part(root: Path, fallback: Path) -> _TestPart:
    """The sample submission and its ids' images from `test/`, or from `fallback` (an `images/` folder,
    whose files the caller accounts for)."""
    folder = root / "test" if (root / "test").is_dir() else fallback
    files = list_images(folder)
    keys = _keys(files)
    sample = find_sample_submission(root, set(keys))
    ids = read_ids(sample)
    paths, missing = _match(ids, keys, folder)
    unused = _unused(files, paths) if folder != fallback else ()
    return _TestPart(sample, ids, FileImages(tuple(paths), _cache_dir(root)), missing, unused)


def _relative_ids(root: Path, paths: list[Path]) -> list[str]:
    return [p.relative_to(root).as_posix() for p in paths]


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
    """train.csv (label + pixel columns), test.csv (pixels), sample submission with one id per test row."""
    train_path, test_path = root / "train.csv", root / "test.csv"
    for path in (train_path, test_path):
        if not path.exists():
            raise CompetitionError(f"{path} missing: the pixel_csv layout needs train.csv and test.csv")
    train = pd.read_csv(train_path)
    test = pd.read_csv(test_path)
    label_column = next((c for c in train.columns if c.lower() == "label"), None)
    if label_column is None:
        raise CompetitionError(f"{train_path}: no 'label' column")
    sample = find_sample_submission(root)
    test_ids = read_ids(sample)
    if len(test_ids) != len(test):
        raise CompetitionError(
            f"{sample}: {len(test_ids)} ids but {test_path} has {len(test)} rows; each id needs its test image"
        )
    test, unmatched = _test_rows_by_id(test, test_path, sample, test_ids)
    train_columns, test_columns = _pixel_columns(train, train_path), _pixel_columns(test, test_path)
    return Competition(
        root=root,
        train_ids=[str(i) for i in range(len(train))],
        train_labels=pd.read_csv(train_path, usecols=[label_column], dtype=str)[label_column].tolist(),
        test_ids=test_ids,
        sample_submission=sample,
        solution=_solution(root),
        train_images=ArrayImages(pixels_to_images(train.fillna(0), train_columns, train_path)),
        test_images=ArrayImages(pixels_to_images(test.fillna(0), test_columns, test_path)),
        labels_file=train_path,
        unusable_train=_missing_pixels(train, train_columns),
        unusable_test={**_missing_pixels(test, test_columns), **unmatched},
    )


def _test_rows_by_id(
    test: pd.DataFrame, test_path: Path, sample: Path, test_ids: list[str]
) -> tuple[pd.DataFrame, dict[int, str]]:
    """test.csv's rows in the sample submission's id order, matched by test.csv's id column, with
    sample row -> why for ids no row carries; without an id column, the rows as they are."""
    sample_id = pd.read_csv(sample, nrows=0).columns[0]
    names = {str(sample_id).lower(), *ID_COLUMNS}
    column = next((c for c in test.columns if str(c).lower() in names), None)
    if column is None:
        log.info("%s has no id column: its rows are paired with the ids of %s by position", test_path.name, sample.name)
        return test, {}
    file_ids = pd.read_csv(test_path, usecols=[column], dtype=str, keep_default_na=False)[column].str.strip()
    repeated = file_ids[file_ids.duplicated()].tolist()
    if repeated:
        raise CompetitionError(f"{test_path}: its id column {column!r} repeats ids, e.g. {repeated[:3]}")
    row_of = {test_id: row for row, test_id in enumerate(file_ids)}
    rows = [row_of.get(test_id.strip(), 0) for test_id in test_ids]  # row 0 stands in for a missing id, never used
    missing = {
        k: f"no row of {test_path.name} has id {test_id!r} (column {column!r})"
        for k, test_id in enumerate(test_ids)
        if test_id.strip() not in row_of
    }
    log.info("%s: rows matched to the ids of %s by its id column %r", test_path.name, sample.name, column)
    return test.iloc[rows].reset_index(drop=True), missing


def _missing_pixels(frame: pd.DataFrame, columns: list[str]) -> dict[int, str]:
    """Row -> why, for rows with empty pixel values (read as 0 in the images, so never used)."""
    empty = frame[columns].isna().sum(axis=1)
    return {int(i): f"row {int(i) + 2}: {int(n)} empty pixel value(s)" for i, n in empty[empty > 0].items()}


def _answer_columns(root: Path) -> list[str]:
    """The sample submission's columns after the id (the answer column, or one per class); [] without one."""
    try:
        return [str(c) for c in pd.read_csv(find_sample_submission(root), nrows=0).columns[1:]]
    except CompetitionError:
        return []


def label_score(frame: pd.DataFrame, answers: list[str]) -> tuple[tuple[int, int, int, int], str]:
    """How much the best non-id column of `frame` looks like labels, and its name. The score, compared in
    order: named like the sample submission's answer column (or its values are its class columns), named
    like a label (`LABEL_COLUMNS`), text rather than numbers, few distinct values (classes repeat)."""
    best: tuple[tuple[int, int, int, int], str] = ((0, 0, 0, 0), str(frame.columns[1]))
    lowered = {a.lower() for a in answers}
    for column in frame.columns[1:]:
        values = frame[column][frame[column].str.strip() != ""]
        if values.empty:
            continue
        named = str(column).lower() in lowered  # the answer column, or one of the sample's per-label columns
        answer = named if len(answers) == 1 else named or set(values) <= set(answers)
        text = pd.to_numeric(values, errors="coerce").isna().any()
        few = values.nunique() <= max(2, len(values) // 2)
        score = (int(answer), int(str(column).lower() in LABEL_COLUMNS), int(text), int(few))
        if score > best[0]:
            best = (score, str(column))
    return best


def find_labels_csv(root: Path, keys: dict[str, Path], labels_file: str = "") -> Path | None:
    """The CSV naming the training images in `keys` with their labels: `labels_file` when set; else, of the
    CSVs (not the sample submission or solution) whose first column names at least half as many images as
    the best one does, the one whose columns look most like labels (`label_score`), then naming the most.
    Two that tie on both stop with the candidates and `data.labels_file`."""
    if labels_file:
        path = root / labels_file
        if not path.is_file():
            found = ", ".join(p.name for p in sorted(root.glob("*.csv"))) or "none"
            raise CompetitionError(f"data.labels_file: {labels_file} is not in {root} (its CSVs: {found})")
        return path
    hits: dict[Path, int] = {}
    for path in sorted(root.glob("*.csv")):
        if path.name == "solution.csv" or path.stem.lower().replace("_", "").startswith("samplesubmission"):
            continue
        if pd.read_csv(path, nrows=0).shape[1] >= 2:
            hits[path] = sum(i in keys for i in read_ids(path))
    most = max(hits.values(), default=0)
    if most == 0:
        return None
    answers = _answer_columns(root)
    ranked = sorted(
        ((label_score(pd.read_csv(p, dtype=str, keep_default_na=False), answers)[0], n, p) for p, n in hits.items()
         if 2 * n >= most), key=lambda x: (x[0], x[1]), reverse=True,
    )  # fmt: skip
    tied = [p for score, n, p in ranked if (score, n) == ranked[0][:2]]
    if len(tied) > 1:
        raise CompetitionError(
            f"{root}: {len(tied)} CSVs could be the training labels, alike in the images they name and in their "
            f"columns ({', '.join(p.name for p in tied)}); set data.labels_file to the one to use"
        )
    if len(ranked) > 1:
        log.info("training labels from %s (other CSVs naming the images: %s)", ranked[0][2].name,
                 ", ".join(p.name for _, _, p in ranked[1:]))  # fmt: skip
    return ranked[0][2]


def binary_columns(frame: pd.DataFrame) -> tuple[str, ...]:
    """The answer columns when there are several and each holds only 0 and 1 (one column per label); else ()."""
    answers = list(frame.columns[1:])
    if len(answers) < 2 or not all(set(frame[c].str.strip()) <= {"0", "1"} for c in answers):
        return ()
    return tuple(answers)


def tags_of(frame: pd.DataFrame, columns: tuple[str, ...]) -> list[str]:
    """Each row's labels as space-separated tags: the columns holding 1, whitespace in a name as underscores."""
    names = ["_".join(c.split()) for c in columns]
    ones = frame[list(columns)].apply(lambda col: col.str.strip() == "1").to_numpy()
    return [" ".join(n for n, on in zip(names, row) if on) for row in ones]


def read_labels_csv(root: Path, labels_file: str = "") -> Competition:
    """`train/` (or `images/`) and a CSV of id (file name with or without extension) -> label: `labels_file`,
    or the one `find_labels_csv` finds."""
    image_dir = _first_dir(root, ("train", "images"))
    if image_dir is None:
        raise CompetitionError(f"{root}: the labels_csv layout needs a train/ or images/ folder of images")
    keys = _keys(list_images(image_dir))
    labels_path = find_labels_csv(root, keys, labels_file)
    if labels_path is None:
        raise CompetitionError(f"{root}: no CSV maps the files in {image_dir.name}/ to labels (id, label)")
    frame = pd.read_csv(labels_path, dtype=str, keep_default_na=False)
    if frame.shape[1] < 2:
        raise CompetitionError(f"{labels_path}: needs an id column and a label column")
    named = [c for c in frame.columns[1:] if c.lower() in LABEL_COLUMNS]
    label_columns = () if named else binary_columns(frame)  # one 0/1 column per label: multi-label tags
    labels = tags_of(frame, label_columns) if label_columns else frame[label_score(frame, _answer_columns(root))[1]].tolist()
    ids = frame.iloc[:, 0].tolist()
    paths, missing = _match(ids, keys, image_dir)
    test = _test_part(root, image_dir)
    return Competition(
        root=root,
        train_ids=ids,
        train_labels=labels,
        test_ids=test.ids,
        sample_submission=test.sample,
        solution=_solution(root),
        train_images=FileImages(tuple(paths), _cache_dir(root)),
        test_images=test.images,
        labels_file=labels_path,
        label_columns=label_columns,
        unusable_train=missing,
        unusable_test=test.missing,
        unreferenced=_unused(list_images(image_dir), paths + list(test.images.paths)) + test.unused,
    )


def read_class_folders(root: Path) -> Competition:
    """`train/<class name>/<image>`: the folder names the class."""
    train_dir = _first_dir(root, TRAIN_DIRS)
    if train_dir is None:
        raise CompetitionError(f"{root}: the class_folders layout needs train/<class name>/ folders of images")
    paths, labels = [], []
    for class_dir in sorted(p for p in train_dir.iterdir() if p.is_dir()):
        images = list_images(class_dir)
        paths += images
        labels += [class_dir.name] * len(images)
    if not paths:
        raise CompetitionError(f"{train_dir}: no class folders with images (expected {train_dir.name}/<class>/*.png)")
    test = _test_part(root, train_dir)
    return Competition(
        root=root,
        train_ids=_relative_ids(root, paths),
        train_labels=labels,
        test_ids=test.ids,
        sample_submission=test.sample,
        solution=_solution(root),
        train_images=FileImages(tuple(paths), _cache_dir(root)),
        test_images=test.images,
        unusable_test=test.missing,
        unreferenced=_unused(list_images(train_dir), list(test.images.paths)) + test.unused,  # loose in train/
    )


def _labels_in_names(paths: list[Path]) -> list[str]:
    labels = []
    for path in paths:
        found = _LABEL_IN_NAME.match(path.stem)
        if found is None:
            raise CompetitionError(f"{path}: the label_in_name layout needs names like <label>_<n>{path.suffix}")
        labels.append(found["label"])
    return labels


def read_label_in_name(root: Path) -> Competition:
    """`train|training/<label>_<n>.jpg`, optionally `valid|validation/` alike (ids listed in `valid_ids`)."""
    train_dir = _first_dir(root, ("train", "training"))
    if train_dir is None:
        raise CompetitionError(f"{root}: the label_in_name layout needs a train/ or training/ folder")
    valid_dir = _first_dir(root, VALID_DIRS)
    train_paths = list_images(train_dir)
    valid_paths = list_images(valid_dir) if valid_dir else []
    paths = train_paths + valid_paths
    test = _test_part(root, train_dir)
    return Competition(
        root=root,
        train_ids=_relative_ids(root, paths),
        train_labels=_labels_in_names(paths),
        test_ids=test.ids,
        sample_submission=test.sample,
        solution=_solution(root),
        train_images=FileImages(tuple(paths), _cache_dir(root)),
        test_images=test.images,
        valid_ids=frozenset(_relative_ids(root, valid_paths)),
        unusable_test=test.missing,
        unreferenced=test.unused,
    )


LAYOUTS: dict[str, Callable[[Path], Competition]] = {
    "pixel_csv": read_pixel_csv,
    "labels_csv": read_labels_csv,
    "class_folders": read_class_folders,
    "label_in_name": read_label_in_name,
}


def detect_layout(root: Path, labels_file: str = "") -> str:
    """The layout the files under `root` follow (`labels_file`: the labels CSV, when set); ambiguous or
    unknown ones ask for `data.layout`."""
    train_csv = root / "train.csv"
    if train_csv.exists() and (root / "test.csv").exists():
        if any(str(c).lower().startswith("pixel") for c in pd.read_csv(train_csv, nrows=0).columns):
            return "pixel_csv"
    train_dir = _first_dir(root, TRAIN_DIRS)
    if train_dir is not None:
        images = list_images(train_dir)
        if not images and any(p.is_dir() and list_images(p) for p in train_dir.iterdir()):
            return "class_folders"
        if images and train_dir.name != "training" and find_labels_csv(root, _keys(images), labels_file):
            return "labels_csv"
        if images and all(_LABEL_IN_NAME.match(p.stem) for p in images):
            return "label_in_name"
    raise CompetitionError(
        f"{root}: no known competition layout found (train.csv with pixel columns, train/<class>/ folders, "
        f"train/ with a labels CSV, or train/<label>_<n>.jpg); set data.layout to one of {', '.join(LAYOUTS)}"
    )
