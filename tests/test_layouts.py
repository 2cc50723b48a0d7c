"""Each competition layout, from a tiny generated competition on disk to a submission shaped like its sample."""

from __future__ import annotations

import dataclasses
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from kagglecv.data import TRAIN_ONLY_FOLD, CompetitionError, read_folds
from kagglecv.ingest import read_competition
from kagglecv.images import FileImages
from kagglecv.params import DataParams
from kagglecv.paths import Paths
from tests.conftest import run_pipeline, tiny_params


def write_image(path: Path, label_index: int, rng: np.random.Generator, *, grey: bool = False) -> None:
    """A small image whose brightness tells its class; size varies, so resizing is exercised."""
    h, w = rng.integers(6, 14, size=2)
    image = np.full((h, w, 3), 40 + 60 * label_index, np.uint8) + rng.integers(0, 20, (h, w, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), image[..., 0] if grey else image)


def assert_matches_sample(submission: Path, sample: Path, labels: set[str]) -> pd.DataFrame:
    """Same header, id text and order as the sample; labels as spelled in training, or probability rows."""
    assert submission.read_text().splitlines()[0] == sample.read_text().splitlines()[0]
    got = pd.read_csv(submission, dtype=str, keep_default_na=False)
    want = pd.read_csv(sample, dtype=str, keep_default_na=False)
    assert list(got.columns) == list(want.columns)
    assert got.iloc[:, 0].tolist() == want.iloc[:, 0].tolist()
    if got.shape[1] == 2:
        assert set(got.iloc[:, 1]) <= labels
    else:
        probs = got.iloc[:, 1:].to_numpy(float)
        np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-9)
        assert ((probs > 0) & (probs < 1)).all()
    return got


def test_pixel_csv_from_a_zip(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    labels = np.repeat([3, 7, 9], 6)
    pixels = lambda n: rng.integers(0, 256, (n, 16))  # noqa: E731  4x4 grey
    train_frame = pd.DataFrame(pixels(len(labels)), columns=[f"pixel{i}" for i in range(16)])
    train_frame.insert(0, "label", labels)
    test_frame = pd.DataFrame(pixels(5), columns=train_frame.columns[1:])
    sample = pd.DataFrame({"ImageId": range(1, 6), "Label": 0})
    archive = tmp_path / "digit-recognizer.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for name, frame in (("train.csv", train_frame), ("test.csv", test_frame), ("sample_submission.csv", sample)):
            zf.writestr(name, frame.to_csv(index=False))
    submission = run_pipeline(tiny_params(source="local", path=str(archive)), Paths(tmp_path / "run"))
    assert_matches_sample(submission, tmp_path / "run/data/raw/sample_submission.csv", {"3", "7", "9"})


def test_labels_csv_dog_breed_with_nested_zips_and_probability_columns(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    breeds = ["scottish_deerhound", "affenpinscher", "boston_bull"]
    ids = [f"{i:03x}a9e" for i in range(12)]
    labels = [breeds[i % 3] for i in range(12)]
    folder = tmp_path / "unzipped"
    for i, image_id in enumerate(ids):
        write_image(folder / "train" / f"{image_id}.jpg", i % 3, rng)
    test_ids = ["ff01", "0a02", "5c03"]
    for i, image_id in enumerate(test_ids):
        write_image(folder / "test" / f"{image_id}.jpg", i, rng)
    pd.DataFrame({"id": ids, "breed": labels}).to_csv(folder / "labels.csv", index=False)
    sample = pd.DataFrame({"id": test_ids, **{b: 1 / 3 for b in breeds}})  # columns not in sorted order
    sample.to_csv(folder / "sample_submission.csv", index=False)
    archive = tmp_path / "dog-breed-identification.zip"
    with zipfile.ZipFile(archive, "w") as outer:
        for part in ("train", "test"):
            inner = tmp_path / f"{part}.zip"
            with zipfile.ZipFile(inner, "w") as zf:
                for path in sorted((folder / part).iterdir()):
                    zf.write(path, f"{part}/{path.name}")
            outer.write(inner, f"{part}.zip")
        for name in ("labels.csv", "sample_submission.csv"):
            outer.writestr(f"{name}.zip", _zip_bytes(tmp_path / f"{name}.zip", folder / name))
    raw_sample = tmp_path / "run/data/raw/sample_submission.csv"
    submission = run_pipeline(tiny_params(source="local", path=str(archive)), Paths(tmp_path / "run"))
    got = assert_matches_sample(submission, raw_sample, set())
    assert list(got.columns[1:]) == breeds
    competition = read_competition(tmp_path / "run/data/raw")
    assert competition.train_ids == ids and competition.train_labels == labels


def _zip_bytes(archive: Path, member: Path) -> bytes:
    with zipfile.ZipFile(archive, "w") as zf:
        zf.write(member, member.name)
    return archive.read_bytes()


def test_labels_csv_cifar_style_ids_without_extension_and_string_labels(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    classes = ["frog", "truck", "airplane"]
    folder = tmp_path / "cifar-10"
    for i in range(1, 13):
        write_image(folder / "train" / f"{i}.png", i % 3, rng)
    pd.DataFrame({"id": range(1, 13), "label": [classes[i % 3] for i in range(1, 13)]}).to_csv(
        folder / "trainLabels.csv", index=False
    )
    for i in range(1, 5):
        write_image(folder / "test" / f"{i}.png", i % 3, rng)
    pd.DataFrame({"id": [3, 1, 4, 2], "label": "cat"}).to_csv(folder / "sampleSubmission.csv", index=False)
    submission = run_pipeline(tiny_params(source="local", path=str(folder)), Paths(tmp_path / "run"))
    assert_matches_sample(submission, folder / "sampleSubmission.csv", set(classes))
    assert read_competition(tmp_path / "run/data/raw").test_ids == ["3", "1", "4", "2"]


def test_class_folders_plant_seedlings_mixed_formats(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    species = ["Black-grass", "Loose Silky-bent", "Shepherds Purse"]
    folder = tmp_path / "plant-seedlings"
    formats = [".png", ".jpg", ".webp", ".bmp"]
    for k, name in enumerate(species):
        for i in range(4):
            write_image(folder / "train" / name / f"{k}{i:04d}{formats[i]}", k, rng, grey=(i == 0))
    test_files = [f"{i:03d}e90e4.png" for i in range(5)]
    for i, name in enumerate(test_files):
        write_image(folder / "test" / name, i % 3, rng)
    pd.DataFrame({"file": test_files, "species": "Black-grass"}).to_csv(folder / "sample_submission.csv", index=False)
    submission = run_pipeline(tiny_params(source="local", path=str(folder)), Paths(tmp_path / "run"))
    assert_matches_sample(submission, folder / "sample_submission.csv", set(species))
    competition = read_competition(tmp_path / "run/data/raw")
    assert competition.classes == sorted(species)
    assert competition.train_images.load(img_size=8).shape == (12, 8, 8, 3)  # one grey image among colour


def write_food11(folder: Path, rng: np.random.Generator) -> list[str]:
    """training/<label>_<n>.jpg, validation/ alike (same names!), test/0001.jpg…; returns the test ids."""
    for part in ("training", "validation"):
        for label in range(3):
            for n in range(4 if part == "training" else 2):
                write_image(folder / part / f"{label}_{n}.jpg", label, rng)
    test_ids = [f"{i:04d}" for i in range(1, 6)]
    for i, test_id in enumerate(test_ids):
        write_image(folder / "test" / f"{test_id}.jpg", i % 3, rng)
    pd.DataFrame({"Id": test_ids, "Category": 0}).to_csv(folder / "sample_submission.csv", index=False)
    return test_ids


def test_label_in_name_merges_validation_into_the_folds(tmp_path: Path) -> None:
    folder = tmp_path / "food11"
    write_food11(folder, np.random.default_rng(4))
    submission = run_pipeline(tiny_params(source="local", path=str(folder)), Paths(tmp_path / "run"))
    got = assert_matches_sample(submission, folder / "sample_submission.csv", {"0", "1", "2"})
    assert got["Id"].tolist()[0] == "0001"
    folds = read_folds(tmp_path / "run/data/folds.csv")
    assert len(folds) == 18 and folds["id"].is_unique and set(folds["fold"]) == {0, 1}


def test_label_in_name_holdout_trains_one_model_on_the_given_validation(tmp_path: Path) -> None:
    folder = tmp_path / "food11"
    write_food11(folder, np.random.default_rng(5))
    params = dataclasses.replace(tiny_params(source="local", path=str(folder)), data=DataParams(
        source="local", path=str(folder), valid_split="holdout", layout="label_in_name"))  # fmt: skip
    run_pipeline(params, Paths(tmp_path / "run"))
    folds = read_folds(tmp_path / "run/data/folds.csv")
    is_valid = folds["id"].str.startswith("validation/")
    assert (folds.loc[is_valid, "fold"] == 0).all() and is_valid.sum() == 6
    assert (folds.loc[~is_valid, "fold"] == TRAIN_ONLY_FOLD).all()
    assert sorted(p.name for p in (tmp_path / "run/models").iterdir()) == ["fold0.pt"]


def test_file_images_decode_once_and_cache_to_disk(tmp_path: Path) -> None:
    rng = np.random.default_rng(6)
    paths = []
    for i, suffix in enumerate([".png", ".jpg", ".webp", ".bmp"]):
        paths.append(tmp_path / f"img{i}{suffix}")
        write_image(paths[-1], i, rng, grey=(suffix == ".png"))
    rgba = np.zeros((5, 7, 4), np.uint8)
    rgba[..., 2] = 200  # red in BGR(A)
    paths.append(tmp_path / "alpha.png")
    cv2.imwrite(str(paths[-1]), rgba)
    images = FileImages(tuple(paths), tmp_path / "cache").load(img_size=6)
    assert images.shape == (5, 6, 6, 3) and images.dtype == np.uint8
    assert (images[4, ..., 0] == 200).all() and (images[4, ..., 2] == 0).all()  # RGB order, alpha dropped
    assert len(list((tmp_path / "cache").glob("*.npy"))) == 1
    again = FileImages(tuple(paths), tmp_path / "cache").load(img_size=6)
    np.testing.assert_array_equal(again, images)
    assert FileImages(tuple(paths[:1])).load(img_size=6, channels=0).shape == (1, 6, 6, 1)


def test_ambiguous_files_ask_for_data_layout(tmp_path: Path) -> None:
    (tmp_path / "raw").mkdir()
    (tmp_path / "raw" / "notes.txt").write_text("nothing here")
    with pytest.raises(CompetitionError, match="set data.layout"):
        read_competition(tmp_path / "raw")
