"""Reading a competition (`read_competition`: its layout detected and read, then checked) and the
ingest checks: every image of a competition is looked at once, before anything trains on it.

`inspect_competition` takes what a layout reader found and returns the competition every stage
uses, with its problems listed (`Competition.problems`, written by `split` to
`data/ingest_report.csv`):

- a training image that is missing, unreadable or truncated, whose id repeats, or whose label is
  empty or has no column in a probability sample submission: left out (`data.bad_images: skip`)
  or the stage stops (`stop`);
- an empty test set, a repeated sample-submission id, a sample-submission id with no test image, a
  test image that cannot be read: the stage stops, since every test id needs a prediction;
- an image file no CSV refers to: noted, nothing else.

Labels are read in one form whatever the files' spelling: surrounding whitespace stripped, Unicode
NFC, integral decimals as the integers they are when every label is one (`1.0` -> `1`, as pandas
writes an integer column that held a gap). Labels that differ only in case or whitespace (`zero `,
`Zero`, `zero`) are listed in the report and merged into their most common spelling
(`data.similar_labels: merge`) or stop the stage (`stop`).

An image is checked by decoding it completely with Pillow (which, unlike OpenCV, refuses a truncated
JPEG); the verdicts are cached in `data/cache/` per set of files, so later stages do not decode again.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import re
import unicodedata
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd
from PIL import Image, UnidentifiedImageError

from kagglecv.artifacts import read_cached_json, write_json
from kagglecv.data import Competition, CompetitionError, ImageSource, IngestProblem
from kagglecv.fingerprints import content_key, entry_key
from kagglecv.images import FileImages
from kagglecv.layouts import LAYOUTS, detect_layout, read_labels_csv
from kagglecv.progress import Progress

log = logging.getLogger("kagglecv.ingest")

SHOWN = 3  # problems quoted in an error message; the report lists them all
_INTEGRAL_DECIMAL = re.compile(r"^[+-]?\d+(\.0*)?$")  # 7, 7.0, 7.


class IngestError(CompetitionError):
    """The competition cannot be used as it is; `problems` lists every finding, the message the first few."""

    def __init__(self, message: str, problems: Sequence[IngestProblem]) -> None:
        super().__init__(message)
        self.problems = tuple(problems)


def check_image(path: Path, max_pixels: int | None = None) -> str | None:
    """What is wrong with one image file, or None when it decodes completely. An image of more than
    `max_pixels` (None: no limit) is not decoded: a small file can hold a huge image (a decompression bomb)."""
    if not path.is_file():
        return "missing"
    try:
        with Image.open(path) as image:
            if max_pixels is not None and image.width * image.height > max_pixels:
                return (
                    f"{image.width}x{image.height} is {image.width * image.height / 1e6:.1f} megapixels, above "
                    f"data.max_megapixels {max_pixels / 1e6:g}; raise it to use this image"
                )
            image.load()
    except UnidentifiedImageError:
        return "not an image file Pillow can read"
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        return f"truncated or corrupt image ({err})"
    return None


def find_bad_images(
    paths: Sequence[Path], cache_dir: Path | None, max_pixels: int | None = None, *, content: str | None = None
) -> dict[int, str]:
    """Index -> what is wrong, for each of `paths` that does not decode or has more than `max_pixels`;
    cached in `cache_dir` under their `fingerprints.content_key` (`content` when known already)."""
    cached = None
    if cache_dir is not None:
        key = entry_key(content or content_key(paths, cache_dir), "check_image v2", max_pixels)
        cached = cache_dir / f"checked-{key}.json"
    if cached is not None and (verdicts := read_cached_json(cached)) is not None:
        return {int(i): reason for i, reason in verdicts.items()}
    verdicts = []
    with (
        ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool,  # Pillow decodes without the GIL
        Progress(len(paths), f"checking {len(paths)} images", unit="img", log=log) as progress,
    ):
        for verdict in pool.map(lambda path: check_image(path, max_pixels), paths):
            verdicts.append(verdict)
            progress.update()
    bad = {i: reason for i, reason in enumerate(verdicts) if reason is not None}
    if cached is not None:
        write_json(cached, {str(i): reason for i, reason in bad.items()})
    return bad


def _integral(labels: list[str]) -> list[str] | None:
    """`labels` with integral decimals as integers ('1.0' -> '1'), when every label is an integer and one
    at least is written as a decimal; else None."""
    if not labels or not all(_INTEGRAL_DECIMAL.match(label) for label in labels):
        return None
    if not any("." in label for label in labels):
        return None
    return [label.split(".")[0] for label in labels]


def normalise_labels(
    labels: Sequence[object], file: str, similar_labels: str = "merge"
) -> tuple[list[object], list[IngestProblem]]:
    """`labels` in one form (see the module docstring) and the findings; empty labels stay as they are.
    Raises `IngestError` for labels that differ only in case or whitespace when `similar_labels` is stop."""
    text = [unicodedata.normalize("NFC", label) for label in labels if isinstance(label, str) and label.strip()]
    spellings: dict[str, Counter[str]] = {}  # case- and whitespace-blind key -> spelling -> count
    for label in text:
        spellings.setdefault(" ".join(label.split()).casefold(), Counter())[label] += 1
    canonical, problems = {}, []
    action = "merged" if similar_labels == "merge" else "stop"
    for group in spellings.values():
        stripped = Counter()
        for spelling, n in group.items():
            stripped[spelling.strip()] += n
        chosen = min(stripped, key=lambda s: (-stripped[s], s))  # the most common spelling, without the margins
        for spelling, n in sorted(group.items()):
            canonical[spelling] = chosen
            if len(group) > 1 and spelling != chosen:
                why = f"label {spelling!r} ({n} rows) differs from {chosen!r} only in case or whitespace"
                problems.append(IngestProblem("train", file, "", why, action))
    if problems and similar_labels == "stop":
        raise IngestError(
            f"{len(problems)} label spelling(s) differ from another only in case or whitespace and "
            f"data.similar_labels is stop: {_describe(problems)}; fix {file}, or set data.similar_labels: merge",
            problems,
        )
    out = [canonical[unicodedata.normalize("NFC", x)] if isinstance(x, str) and x.strip() else x for x in labels]
    integral = _integral([x for x in out if isinstance(x, str) and x.strip()])
    if integral is not None:
        as_int = dict(zip([x for x in out if isinstance(x, str) and x.strip()], integral))
        out = [as_int.get(x, x) if isinstance(x, str) else x for x in out]
        example = next(x for x in as_int if "." in x)
        why = f"labels written as decimals (e.g. {example!r}) read as the integers they are ({as_int[example]!r})"
        problems.append(IngestProblem("train", file, "", why, "converted"))
    return out, problems


def _is_empty(label: object) -> bool:
    return label is None or (isinstance(label, float) and math.isnan(label)) or not str(label).strip()


def _is_column(label: str, columns: list[str], column_tags: set[str]) -> bool:
    """A class named by a column of the sample submission, or tags each named by one."""
    return label in columns or set(label.split()) <= column_tags


def _file(competition: Competition, path: Path) -> str:
    return path.relative_to(competition.root).as_posix() if path.is_relative_to(competition.root) else str(path)


def _train_problems(competition: Competition, check_images: bool, max_pixels: int | None) -> dict[int, tuple[str, str]]:
    """Row -> (file at fault, what is wrong) for the training rows that cannot be used."""
    c = competition
    listing = _file(c, c.labels_file) if c.labels_file else "training files"
    found: dict[int, tuple[str, str]] = {i: (listing, why) for i, why in c.unusable_train.items()}
    labels_of: dict[str, set[str]] = {}
    for image_id, label in zip(c.train_ids, c.train_labels):
        labels_of.setdefault(image_id, set()).add(str(label))
    sample_columns = list(pd.read_csv(c.sample_submission, nrows=0).columns)
    column_tags = {"_".join(name.split()) for name in sample_columns[1:]}  # as kagglecv.layouts.tags_of spells them
    seen: set[str] = set()
    for i, (image_id, label) in enumerate(zip(c.train_ids, c.train_labels)):
        if i in found:
            continue
        if len(labels_of[image_id]) > 1:
            found[i] = (listing, f"id {image_id!r} appears more than once, with different labels")
        elif image_id in seen:
            found[i] = (listing, f"id {image_id!r} appears more than once; the first row is kept")
        elif _is_empty(label):
            found[i] = (listing, "empty label")
        elif len(sample_columns) > 2 and not _is_column(str(label), sample_columns[1:], column_tags):
            found[i] = (listing, f"label {label!r} is not a column of {c.sample_submission.name}")
        seen.add(image_id)
    if check_images:
        _add_bad_images(c, c.train_images, found, max_pixels)
    return dict(sorted(found.items()))


def _add_bad_images(
    c: Competition, images: ImageSource, found: dict[int, tuple[str, str]], max_pixels: int | None
) -> None:
    """Decode every image file not already found wanting; add the unreadable ones to `found`."""
    if not isinstance(images, FileImages):
        return  # pixel CSVs hold no files to decode
    todo = [i for i in range(len(images)) if i not in found]
    content = images.content if images.cache_dir is not None and len(todo) == len(images) else None  # the set's key
    bad = find_bad_images([images.paths[i] for i in todo], images.cache_dir, max_pixels, content=content)
    for j, why in bad.items():
        found[todo[j]] = (_file(c, images.paths[todo[j]]), why)


def _test_problems(competition: Competition, check_images: bool, max_pixels: int | None) -> list[IngestProblem]:
    c = competition
    sample = _file(c, c.sample_submission)
    if not c.test_ids:
        return [IngestProblem("test", sample, "", "the test set is empty: the sample submission lists no ids")]
    found = {i: (sample, why) for i, why in c.unusable_test.items()}
    seen: set[str] = set()
    for i, test_id in enumerate(c.test_ids):
        if test_id in seen and i not in found:
            found[i] = (sample, f"id {test_id!r} appears more than once")
        seen.add(test_id)
    if check_images:
        _add_bad_images(c, c.test_images, found, max_pixels)
    return [IngestProblem("test", file, c.test_ids[i], why, "stop") for i, (file, why) in sorted(found.items())]


def _describe(problems: Sequence[IngestProblem]) -> str:
    """The first few problems as `file (id …): what`, for a one-line message."""
    shown = []
    for p in problems[:SHOWN]:
        named_by_file = not p.id or p.id in (Path(p.file).name, Path(p.file).stem)
        shown.append(f"{p.file if named_by_file else f'{p.file} (id {p.id})'}: {p.problem}")
    return "; ".join(shown) + (f"; and {len(problems) - SHOWN} more" if len(problems) > SHOWN else "")


def inspect_competition(
    competition: Competition,
    *,
    bad_images: str = "skip",
    check_images: bool = True,
    similar_labels: str = "merge",
    max_megapixels: float | None = None,
) -> Competition:
    """`competition` without its unusable training rows (images above `max_megapixels` among them), its
    labels in one form, `problems` listing every finding; raises `IngestError` for a problem with the test
    set, an unusable training image under `bad_images: stop`, or labels that differ only in case or
    whitespace under `similar_labels: stop`."""
    listing = _file(competition, competition.labels_file) if competition.labels_file else "training files"
    labels, label_problems = normalise_labels(competition.train_labels, listing, similar_labels)
    c = dataclasses.replace(competition, train_labels=labels)
    max_pixels = None if max_megapixels is None else int(max_megapixels * 1e6)
    train_found = _train_problems(c, check_images, max_pixels)
    action = "excluded" if bad_images == "skip" else "stop"
    train = [IngestProblem("train", file, c.train_ids[i], why, action) for i, (file, why) in train_found.items()]
    test = _test_problems(c, check_images, max_pixels)
    noted = [IngestProblem("unused", _file(c, p), "", "no CSV refers to this image", "ignored") for p in c.unreferenced]
    problems = label_problems + train + test + noted
    if test:
        raise IngestError(
            f"{len(test)} problem(s) with the test set, where every id needs a prediction: {_describe(test)}; "
            f"fix the sample submission or the test images and rerun",
            problems,
        )
    if train and bad_images == "stop":
        raise IngestError(
            f"{len(train)} unusable training image(s) and data.bad_images is stop: {_describe(train)}; "
            f"fix or remove them, or set data.bad_images: skip to train without them",
            problems,
        )
    keep = [i for i in range(len(c.train_ids)) if i not in train_found]
    if not keep:
        raise IngestError(f"no usable training images: {_describe(train)}", problems)
    ids = [c.train_ids[i] for i in keep]
    return dataclasses.replace(
        c,
        train_ids=ids,
        train_labels=[c.train_labels[i] for i in keep],
        train_images=c.train_images.select(keep) if train else c.train_images,
        valid_ids=c.valid_ids & frozenset(ids),
        unusable_train={},
        problems=tuple(problems),
    )


def read_competition(
    root: Path,
    layout: str = "auto",
    *,
    bad_images: str = "skip",
    check_images: bool = True,
    similar_labels: str = "merge",
    labels_file: str = "",
    max_megapixels: float | None = None,
) -> Competition:
    """Read the competition under `root` in `layout` (auto: detected from the files; `labels_file`: the
    labels CSV, "" to find it) and run the ingest checks (`inspect_competition`): unusable training images
    are left out (`bad_images: skip`) or stop it (`stop`), a problem with the test set always does; labels
    that differ only in case or whitespace are merged (`similar_labels: merge`) or stop it. `check_images`
    False skips decoding the images; images above `max_megapixels` (None: no limit) are unusable."""
    if not root.exists():
        raise CompetitionError(f"{root} missing: run 'dvc repro download' first")
    name = detect_layout(root, labels_file) if layout == "auto" else layout
    if name not in LAYOUTS:
        raise CompetitionError(f"data.layout: {name!r} is not supported; choose one of auto, {', '.join(LAYOUTS)}")
    competition = read_labels_csv(root, labels_file) if name == "labels_csv" else LAYOUTS[name](root)
    return inspect_competition(competition, bad_images=bad_images, check_images=check_images,
                               similar_labels=similar_labels, max_megapixels=max_megapixels)  # fmt: skip
