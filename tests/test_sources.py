"""Sources: safe zip extraction, the Kaggle client with only its network calls replaced, torchvision
from files seeded where it looks first."""

from __future__ import annotations

import json
import stat
import struct
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import requests
from kaggle.api.kaggle_api_extended import KaggleApi

from kagglecv.ingest import read_competition
from kagglecv.paths import Paths
from kagglecv.sources import SourceError, extract_zip, fetch_local, fetch_torchvision
from kagglecv.stages import download
from tests.conftest import run_pipeline, tiny_params


def write_pixel_zip(archive: Path) -> None:
    """A Digit Recognizer zip: 12 training rows of 2x2 pixels in 3 classes, 4 test rows."""
    rng = np.random.default_rng(0)
    columns = [f"pixel{i}" for i in range(4)]
    train_frame = pd.DataFrame(rng.integers(0, 256, (12, 4)), columns=columns)
    train_frame.insert(0, "label", [0, 1, 2] * 4)
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("train.csv", train_frame.to_csv(index=False))
        zf.writestr("test.csv", pd.DataFrame(rng.integers(0, 256, (4, 4)), columns=columns).to_csv(index=False))
        zf.writestr("sample_submission.csv", pd.DataFrame({"ImageId": [1, 2, 3, 4], "Label": 0}).to_csv(index=False))


@pytest.mark.parametrize("entry", ["../evil.csv", "/etc/evil.csv", "train/../../evil.csv", "C:/evil.csv"])
def test_zip_entries_outside_the_target_are_refused(tmp_path: Path, entry: str) -> None:
    archive = tmp_path / "bad.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("train.csv", "label\n1\n")
        zf.writestr(entry, "x")
    with pytest.raises(SourceError, match=f"entry '{entry}'"):
        extract_zip(archive, tmp_path / "out")
    assert not (tmp_path / "evil.csv").exists() and not (tmp_path / "out").exists()


def test_zip_symlinks_are_refused(tmp_path: Path) -> None:
    archive = tmp_path / "link.zip"
    info = zipfile.ZipInfo("train/link")
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr(info, "/etc/passwd")
    with pytest.raises(SourceError, match="'train/link' is a symbolic link"):
        extract_zip(archive, tmp_path / "out")


def test_local_zip_is_unwrapped_and_nested_zips_extracted(tmp_path: Path) -> None:
    inner = tmp_path / "inner.zip"
    write_pixel_zip(inner)
    archive = tmp_path / "wrapped.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.write(inner, "competition/data.zip")  # one wrapping folder, a zip inside
    fetch_local(archive, tmp_path / "raw")
    assert sorted(p.name for p in (tmp_path / "raw").iterdir()) == ["sample_submission.csv", "test.csv", "train.csv"]


def test_local_path_missing_names_the_key(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="data.path: .* does not exist"):
        download.run(tiny_params(source="local", path=str(tmp_path / "nope.zip")), Paths(tmp_path))
    with pytest.raises(SourceError, match="data.path: empty"):
        download.run(tiny_params(source="local"), Paths(tmp_path))


def test_kaggle_download_runs_end_to_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def fake_download(self: KaggleApi, competition: str, path: str, quiet: bool = True, **_) -> None:
        calls.append(competition)
        write_pixel_zip(Path(path) / f"{competition}.zip")

    monkeypatch.setattr(KaggleApi, "authenticate", lambda self: None)
    monkeypatch.setattr(KaggleApi, "competition_download_files", fake_download)
    submission = run_pipeline(tiny_params(source="kaggle", competition="digit-recognizer"), Paths(tmp_path))
    assert calls == ["digit-recognizer"]
    frame = pd.read_csv(submission, dtype=str)
    assert list(frame.columns) == ["ImageId", "Label"] and frame["ImageId"].tolist() == ["1", "2", "3", "4"]


def _http_error(status: int) -> requests.HTTPError:
    response = requests.Response()
    response.status_code = status
    return requests.HTTPError(f"{status} Client Error", response=response)


@pytest.mark.parametrize(
    ("failure", "message"),
    [
        (SystemExit(1), "^no Kaggle credentials found: set KAGGLE_USERNAME and KAGGLE_KEY"),
        (_http_error(401), r"^Kaggle rejected the credentials \(HTTP 401\)"),
        (_http_error(403), r"^Kaggle refused to hand out 'digit-recognizer' \(HTTP 403\): accept the .* rules"),
        (requests.ConnectionError("Max retries exceeded"), r"^cannot reach Kaggle .*\(no network connection\)"),
    ],
)
def test_kaggle_failures_are_one_sentence(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failure: BaseException, message: str
) -> None:
    monkeypatch.setenv("KAGGLE_USERNAME", "someone")
    monkeypatch.setenv("KAGGLE_KEY", "secret-key-0123")

    def fail(*args: object, **kwargs: object) -> None:
        raise failure

    monkeypatch.setattr(KaggleApi, "authenticate", fail if isinstance(failure, SystemExit) else lambda self: None)
    monkeypatch.setattr(KaggleApi, "competition_download_files", fail)
    with pytest.raises(SourceError, match=message) as caught:
        download.run(tiny_params(source="kaggle", competition="digit-recognizer"), Paths(tmp_path))
    text = str(caught.value)
    assert "\n" not in text and "secret-key-0123" not in text
    assert not (tmp_path / "raw").exists()  # nothing half-written


def write_idx(path: Path, array: np.ndarray) -> None:
    """MNIST's idx format: magic (0, 0, 0x08 = ubyte, ndim), big-endian int32 dims, then the bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}i", *array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def seed_mnist(raw: Path, name: str) -> np.ndarray:
    """Tiny idx files where torchvision looks first (`<root>/<name>/raw/`); returns the test labels."""
    rng = np.random.default_rng(1)
    folder = raw / "torchvision" / name / "raw"
    write_idx(folder / "train-images-idx3-ubyte", rng.integers(0, 256, (12, 28, 28)))
    write_idx(folder / "train-labels-idx1-ubyte", np.array([0, 1, 2] * 4))
    test_labels = np.array([2, 0, 1, 1, 0])
    write_idx(folder / "t10k-images-idx3-ubyte", rng.integers(0, 256, (5, 28, 28)))
    write_idx(folder / "t10k-labels-idx1-ubyte", test_labels)
    return test_labels


@pytest.mark.parametrize("name", ["MNIST", "FashionMNIST", "KMNIST"])
def test_torchvision_test_split_becomes_test_part_and_solution(tmp_path: Path, name: str) -> None:
    raw = tmp_path / "data/raw"
    test_labels = seed_mnist(raw, name)
    summary = download.run(tiny_params(source="torchvision", name=name), Paths(tmp_path))
    assert summary == {"train_images": 12, "test_images": 5}
    solution = pd.read_csv(raw / "solution.csv", dtype=str)
    assert solution["ImageId"].tolist() == ["1", "2", "3", "4", "5"]
    assert solution["Label"].tolist() == [str(y) for y in test_labels]
    competition = read_competition(raw)
    assert competition.train_images.load(img_size=28).shape == (12, 28, 28, 1)
    assert (raw / "torchvision" / name / "raw" / "t10k-images-idx3-ubyte").exists()  # kept for the next run


def test_torchvision_end_to_end_scores_against_the_solution(tmp_path: Path) -> None:
    seed_mnist(tmp_path / "data/raw", "MNIST")
    paths = Paths(tmp_path)
    run_pipeline(tiny_params(source="torchvision", name="MNIST"), paths)
    score = json.loads(paths.leaderboard_metrics.read_text())["leaderboard"]["accuracy"]
    submission = pd.read_csv(paths.submission, dtype=str)
    solution = pd.read_csv(paths.raw / "solution.csv", dtype=str)
    assert submission["ImageId"].tolist() == solution["ImageId"].tolist()
    assert score == pytest.approx((submission["Label"] == solution["Label"]).mean())  # the submission, scored


class FakeCIFAR10:
    """CIFAR-10's interface (data (N, 32, 32, 3) uint8, targets, classes), without its 170 MB of files."""

    classes = ["airplane", "automobile", "bird"]

    def __init__(self, root: str, train: bool, download: bool) -> None:
        n = 9 if train else 4
        self.data = np.random.default_rng(int(train)).integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
        self.targets = [i % 3 for i in range(n)]


def test_torchvision_colour_becomes_cifar_image_folders_with_class_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torchvision.datasets

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", FakeCIFAR10)
    fetch_torchvision("CIFAR10", tmp_path / "raw")
    competition = read_competition(tmp_path / "raw")
    assert competition.train_labels == ["airplane", "automobile", "bird"] * 3
    assert competition.test_ids == ["1", "2", "3", "4"]
    solution = pd.read_csv(tmp_path / "raw/solution.csv")
    assert solution["label"].tolist() == ["airplane", "automobile", "bird", "airplane"]
    images = competition.test_images.load(img_size=32)
    np.testing.assert_array_equal(images[0], FakeCIFAR10("", train=False, download=False).data[0])  # RGB kept


def test_torchvision_unknown_name_lists_the_choices(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="data.name: 'ImageNet21k' is not supported; choose one of MNIST"):
        fetch_torchvision("ImageNet21k", tmp_path / "raw")


def test_user_solution_is_copied_in_and_scored(tmp_path: Path) -> None:
    archive = tmp_path / "closed.zip"
    write_pixel_zip(archive)
    truth = tmp_path / "truth.csv"
    truth.write_text("ImageId,Label,Usage\n1,0,Public\n2,1,Public\n3,2,Private\n4,0,Private\n")
    run_pipeline(tiny_params(source="local", path=str(archive), solution=str(truth)), Paths(tmp_path / "run"))
    assert (tmp_path / "run/data/raw/solution.csv").read_text() == truth.read_text()
    assert set(pd.read_json(tmp_path / "run/metrics/leaderboard.json")["leaderboard"].index) == {"accuracy"}
