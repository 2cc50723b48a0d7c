"""Where competitions come from. Each source writes a competition folder exactly as Kaggle ships one.

- `write_digits`: scikit-learn's digits as Digit Recognizer (embedded, no network).
- `fetch_local`: a competition already on disk, as a folder or as the zip Kaggle hands out.
- `fetch_kaggle`: the official Kaggle client library downloads the zip; then as `fetch_local`.
- `fetch_torchvision`: torchvision's dataset classes download into `<out>/torchvision/`; the
  official test split becomes the test part and its labels `solution.csv`.
"""

from __future__ import annotations

import contextlib
import io
import re
import shutil
import stat
import tempfile
import zipfile
import zlib
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING
from urllib.error import URLError

import cv2
import numpy as np
import pandas as pd
import requests
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from kagglecv.data import IMAGE_SUFFIXES

if TYPE_CHECKING:
    from kaggle.api.kaggle_api_extended import KaggleApi

# The digits competition is fixed, like a real one: its test part does not move with `seed`.
DIGITS_SPLIT_SEED = 2012
TORCHVISION_DIR = "torchvision"  # torchvision's own files, kept inside data/raw/ so reruns download nothing
# Dataset classes taking `train=True/False`, or `split="train"/"test"`.
TORCHVISION_DATASETS = {
    **dict.fromkeys(["MNIST", "FashionMNIST", "KMNIST", "CIFAR10", "CIFAR100", "USPS"], "train"),
    **dict.fromkeys(["SVHN", "STL10"], "split"),
}
_IGNORED = {"__MACOSX", ".DS_Store"}


class SourceError(RuntimeError):
    """The competition could not be fetched; the message says why and what to do."""


def write_pixel_competition(
    out_dir: Path, train_x: np.ndarray, train_y: list[str], test_x: np.ndarray, test_y: list[str]
) -> None:
    """Digit Recognizer's layout from uint8 (N, H, W, C) images: train.csv, test.csv, sample_submission.csv,
    solution.csv. Pixels are listed channel by channel (C, H, W), as `pixels_to_images` reads them."""

    def pixels(images: np.ndarray) -> pd.DataFrame:
        flat = images.transpose(0, 3, 1, 2).reshape(len(images), -1).astype(np.int64)
        return pd.DataFrame(flat, columns=[f"pixel{i}" for i in range(flat.shape[1])])

    out_dir.mkdir(parents=True, exist_ok=True)
    train = pixels(train_x)
    train.insert(0, "label", train_y)
    train.to_csv(out_dir / "train.csv", index=False, lineterminator="\n")
    pixels(test_x).to_csv(out_dir / "test.csv", index=False, lineterminator="\n")
    image_ids = np.arange(1, len(test_x) + 1)
    pd.DataFrame({"ImageId": image_ids, "Label": 0}).to_csv(
        out_dir / "sample_submission.csv", index=False, lineterminator="\n"
    )
    solution = pd.DataFrame({"ImageId": image_ids, "Label": test_y})
    solution.to_csv(out_dir / "solution.csv", index=False, lineterminator="\n")


def write_digits(out_dir: Path, *, test_fraction: float) -> None:
    """scikit-learn's 1,797 8x8 digits laid out as Kaggle's Digit Recognizer, plus `solution.csv`.

    Pixels are rescaled from 0..16 to 0..255 as in MNIST; a stratified `test_fraction` of the
    images forms the test part, whose labels go to `solution.csv` only.
    """
    digits = load_digits()
    images = np.rint(digits.data * 255.0 / 16.0).astype(np.uint8).reshape(-1, 8, 8, 1)
    labels = digits.target.astype(np.int64)
    train_x, test_x, train_y, test_y = train_test_split(
        images, labels, test_size=test_fraction, stratify=labels, random_state=DIGITS_SPLIT_SEED
    )
    write_pixel_competition(out_dir, train_x, [str(y) for y in train_y], test_x, [str(y) for y in test_y])


def _check_entry(info: zipfile.ZipInfo, archive: Path, target: Path) -> None:
    """Refuse entries that would land outside `target`: absolute, `..`, drive letters, symbolic links."""
    name = info.filename.replace("\\", "/")
    if stat.S_ISLNK(info.external_attr >> 16):
        raise SourceError(f"{archive}: entry {info.filename!r} is a symbolic link; refusing to extract this archive")
    escapes = name.startswith("/") or re.match(r"^[A-Za-z]:", name) or ".." in PurePosixPath(name).parts
    if escapes or not (target / name).resolve().is_relative_to(target.resolve()):
        raise SourceError(f"{archive}: entry {info.filename!r} would land outside {target}; refusing to extract it")


def is_junk(name: str) -> bool:
    """macOS's archive litter (`__MACOSX/`, `._<name>` resource forks, `.DS_Store`): never competition files."""
    parts = PurePosixPath(name.replace("\\", "/")).parts
    return any(part in _IGNORED or part.startswith("._") for part in parts)


def _unreadable(shown: str, err: Exception) -> SourceError:
    return SourceError(
        f"{shown}: not a readable zip file ({err}): it is damaged or was cut short; download the competition "
        f"again, or extract it yourself and set data.path to the extracted folder"
    )


def extract_zip(archive: Path, target: Path, *, shown: str | None = None) -> None:
    """Extract `archive` into `target`, leaving out macOS's litter, after checking every entry stays inside
    it. `shown`: how messages name the archive (default: its path)."""
    shown = shown or str(archive)
    try:
        with zipfile.ZipFile(archive) as zf:
            members = [info for info in zf.infolist() if not is_junk(info.filename)]
            for info in members:
                _check_entry(info, archive, target)
            target.mkdir(parents=True, exist_ok=True)
            zf.extractall(target, members)
    except (zipfile.BadZipFile, zlib.error, EOFError) as err:
        raise _unreadable(shown, err) from None


def _nested_target(archive: Path, shown: str) -> Path:
    """Beside the archive, unless it holds loose images: those go to a folder named after it (test.zip -> test/)."""
    try:
        with zipfile.ZipFile(archive) as zf:
            names = [n for n in zf.namelist() if not n.endswith("/") and not is_junk(n)]
    except (zipfile.BadZipFile, EOFError) as err:
        raise _unreadable(shown, err) from None
    loose_images = any("/" not in n and Path(n).suffix.lower() in IMAGE_SUFFIXES for n in names)
    return archive.parent / archive.name.removesuffix(".zip") if loose_images else archive.parent


def extract_nested_zips(folder: Path, origin: Path | None = None) -> None:
    """Extract every zip under `folder` in place, archives inside archives too, deleting each after;
    macOS's litter is removed first. `origin`: what `folder` was extracted from, for messages."""
    _remove_junk(folder)
    while archives := sorted(folder.rglob("*.zip")):
        for archive in archives:
            inside = archive.relative_to(folder).as_posix()
            shown = f"{inside} (inside {origin})" if origin else str(archive)
            extract_zip(archive, _nested_target(archive, shown), shown=shown)
            archive.unlink()
        _remove_junk(folder)
    unsupported = sorted(p for p in folder.rglob("*") if p.suffix.lower() in (".7z", ".rar"))
    if unsupported:
        raise SourceError(
            f"{unsupported[0]}: {unsupported[0].suffix} archives are not extracted here; extract it yourself "
            f"(e.g. '7z x') and set data.source: local with data.path at the extracted folder"
        )


def _remove_junk(folder: Path) -> None:
    for path in sorted(folder.rglob("*"), reverse=True):  # deepest first
        if not is_junk(path.name) or not (path.exists() or path.is_symlink()):
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()


def _hoist_single_folder(folder: Path) -> None:
    """A zip that wraps everything in one folder (food11/...) is unwrapped, so the files sit at the top."""
    entries = list(folder.iterdir())
    while len(entries) == 1 and entries[0].is_dir() and entries[0].name not in ("train", "training", "images"):
        inner = entries[0].rename(folder / f".{entries[0].name}.hoist")
        for child in inner.iterdir():
            child.rename(folder / child.name)
        inner.rmdir()
        entries = list(folder.iterdir())


def _missing_path(path: Path) -> SourceError:
    relative = "" if path.is_absolute() else (
        f"; a relative path is read from the folder the stage runs in ({Path.cwd()}), and a queued or --temp "
        f"experiment (dvc exp run --queue, dvc queue start) runs in a copy of the workspace under .dvc/tmp/, "
        f"which holds only what git and DVC track: use an absolute path"
    )  # fmt: skip
    return SourceError(
        f"data.path: {path} does not exist; set it to the competition's folder or the .zip "
        f"from 'kaggle competitions download'{relative}"
    )


def fetch_local(path: Path, out_dir: Path) -> None:
    """Copy the competition at `path` (a folder, or a .zip with possibly nested zips) to `out_dir`."""
    if not path.exists():
        raise _missing_path(path)
    if path.is_dir():
        shutil.copytree(path, out_dir, dirs_exist_ok=True)
    elif path.suffix.lower() == ".zip" or zipfile.is_zipfile(path):
        extract_zip(path, out_dir)
    else:
        raise SourceError(f"data.path: {path} is neither a folder nor a zip file")
    extract_nested_zips(out_dir, origin=path)
    if not out_dir.is_dir() or not any(p.is_file() for p in out_dir.rglob("*")):
        raise SourceError(f"data.path: {path} holds no files (an empty zip or folder); download the competition again")
    _hoist_single_folder(out_dir)


def _kaggle_failure(err: Exception, competition: str) -> SourceError:
    """One sentence for what went wrong talking to Kaggle, and what to do about it."""
    status = getattr(getattr(err, "response", None), "status_code", None)
    if status == 401:
        return SourceError(
            "Kaggle rejected the credentials (HTTP 401): check KAGGLE_USERNAME and KAGGLE_KEY or "
            "~/.kaggle/kaggle.json, or create a new API token at https://www.kaggle.com/settings"
        )
    if status == 403:
        return SourceError(
            f"Kaggle refused to hand out {competition!r} (HTTP 403): accept the competition's rules at "
            f"https://www.kaggle.com/competitions/{competition}/rules, then run 'dvc repro download' again"
        )
    if status == 404:
        return SourceError(f"data.competition: Kaggle has no competition {competition!r} (HTTP 404); check the slug")
    if status is not None:
        return SourceError(f"Kaggle answered HTTP {status} for {competition!r}; try again later")
    return SourceError(
        f"cannot reach Kaggle to download {competition!r} (no network connection): connect and rerun, "
        f"or download the zip elsewhere and use data.source: local with data.path"
    )


def kaggle_api() -> KaggleApi:
    """An authenticated `KaggleApi`; credentials stay with the client library, never printed here."""
    with contextlib.redirect_stdout(io.StringIO()):  # the client prints set-up help where we raise one line
        from kaggle.api.kaggle_api_extended import KaggleApi

        api = KaggleApi()
        try:
            api.authenticate()
        except SystemExit:
            raise SourceError(
                "no Kaggle credentials found: set KAGGLE_USERNAME and KAGGLE_KEY, or save your API token "
                "as ~/.kaggle/kaggle.json (never inside the repository)"
            ) from None
    return api


def fetch_kaggle(competition: str, out_dir: Path) -> None:
    """Download `competition` with the official Kaggle client library into `out_dir`, extracted."""
    if not competition:
        raise SourceError("data.competition: empty; set it to the competition's slug, e.g. digit-recognizer")
    with tempfile.TemporaryDirectory(prefix=".kaggle-", dir=out_dir.parent) as tmp:
        try:
            api = kaggle_api()
            api.competition_download_files(competition, path=tmp, quiet=True)
        except (requests.RequestException, ConnectionError, TimeoutError) as err:
            raise _kaggle_failure(err, competition) from None
        archives = sorted(Path(tmp).glob("*.zip"))
        if not archives:
            raise SourceError(f"Kaggle sent no zip for {competition!r}; run 'dvc repro download' again")
        fetch_local(archives[0], out_dir)


def _torchvision_split(name: str, root: Path, *, train: bool) -> tuple[np.ndarray, np.ndarray, list[str] | None]:
    """(uint8 (N, H, W, C) images, int labels, class names) of one official split."""
    import torchvision.datasets

    cls = getattr(torchvision.datasets, name)
    which = {"train": train} if TORCHVISION_DATASETS[name] == "train" else {"split": "train" if train else "test"}
    try:
        dataset = cls(str(root), download=True, **which)
    except (RuntimeError, OSError, URLError) as err:
        raise SourceError(
            f"torchvision could not download {name} into {root} ({err}); check the network connection, "
            f"or place the dataset's files there and rerun"
        ) from None
    images = np.asarray(dataset.data)
    if images.ndim == 3:
        images = images[..., None]  # (N, H, W) -> (N, H, W, 1)
    elif images.shape[1] in (1, 3) and images.shape[-1] not in (1, 3):
        images = images.transpose(0, 2, 3, 1)  # (N, C, H, W) -> (N, H, W, C)
    labels = np.asarray(dataset.targets if hasattr(dataset, "targets") else dataset.labels)
    return np.ascontiguousarray(images, dtype=np.uint8), labels.astype(np.int64), getattr(dataset, "classes", None)


def write_image_competition(
    out_dir: Path, train_x: np.ndarray, train_y: list[str], test_x: np.ndarray, test_y: list[str]
) -> None:
    """Kaggle CIFAR-10's layout: train/<id>.png, trainLabels.csv (id,label), test/<id>.png,
    sampleSubmission.csv, plus solution.csv. Ids count from 1 in each part."""
    for part, images in (("train", train_x), ("test", test_x)):
        (out_dir / part).mkdir(parents=True, exist_ok=True)
        for i, image in enumerate(images, start=1):
            bgr = image if image.shape[-1] == 1 else cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
            cv2.imwrite(str(out_dir / part / f"{i}.png"), bgr)
    frame = pd.DataFrame({"id": np.arange(1, len(train_x) + 1), "label": train_y})
    frame.to_csv(out_dir / "trainLabels.csv", index=False, lineterminator="\n")
    test_ids = np.arange(1, len(test_x) + 1)
    sample = pd.DataFrame({"id": test_ids, "label": train_y[0]})
    sample.to_csv(out_dir / "sampleSubmission.csv", index=False, lineterminator="\n")
    pd.DataFrame({"id": test_ids, "label": test_y}).to_csv(out_dir / "solution.csv", index=False, lineterminator="\n")


def fetch_torchvision(name: str, out_dir: Path, *, previous: Path | None = None) -> None:
    """`name`'s official train/test splits as a competition in `out_dir`.

    Grey datasets become the pixel-CSV layout with numeric labels (as Kaggle's MNIST family);
    colour ones Kaggle CIFAR-10's image-folder layout with class names as labels. torchvision's
    own files from a previous download (`previous/torchvision/`) are reused, so nothing is fetched again.
    """
    if name not in TORCHVISION_DATASETS:
        raise SourceError(f"data.name: {name!r} is not supported; choose one of {', '.join(TORCHVISION_DATASETS)}")
    root = out_dir / TORCHVISION_DIR
    if previous is not None and (previous / TORCHVISION_DIR).is_dir():
        shutil.copytree(previous / TORCHVISION_DIR, root, dirs_exist_ok=True)
    root.mkdir(parents=True, exist_ok=True)
    train_x, train_y, classes = _torchvision_split(name, root, train=True)
    test_x, test_y, _ = _torchvision_split(name, root, train=False)
    colour = train_x.shape[-1] == 3
    names = classes if colour and classes else None
    train_labels = [names[y] if names else str(y) for y in train_y]
    test_labels = [names[y] if names else str(y) for y in test_y]
    write = write_image_competition if colour else write_pixel_competition
    write(out_dir, train_x, train_labels, test_x, test_labels)
