"""Competition files that used to give a plausible submission with wrong answers: ids matched by id,
labels in the competition's own form, labels that differ only in case or whitespace never kept apart."""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from kagglecv.ingest import read_competition
from kagglecv.ingest import IngestError
from kagglecv.params import load_params
from kagglecv.paths import Paths
from kagglecv.stages import split
from kagglecv.submission import make_submission, read_sample_submission
from kagglecv.submission_check import check_submission_text

PIXELS = [f"pixel{i}" for i in range(16)]  # 4x4 grey


def write_pixel_competition(root: Path, *, labels: list[object], test_ids: list[int] | None = None) -> np.ndarray:
    """train.csv, test.csv (with an ImageId column in `test_ids`' order when given) and a sample submission
    listing ids 1..5 in order; returns the test images' pixels (5, 16), row k for id k + 1."""
    rng = np.random.default_rng(0)
    root.mkdir(parents=True)
    train = pd.DataFrame(rng.integers(0, 256, (len(labels), 16)), columns=PIXELS)
    train.insert(0, "label", labels)
    train.to_csv(root / "train.csv", index=False)
    pixels = np.arange(5)[:, None] * 40 + np.zeros((5, 16), int)  # test image k: every pixel 40 * k
    test = pd.DataFrame(pixels, columns=PIXELS)
    if test_ids is not None:
        test = test.iloc[[i - 1 for i in test_ids]]
        test.insert(0, "ImageId", test_ids)
    test.to_csv(root / "test.csv", index=False)
    pd.DataFrame({"ImageId": range(1, 6), "Label": 0}).to_csv(root / "sample_submission.csv", index=False)
    return pixels


def test_a_pixel_test_csv_with_an_id_column_is_matched_by_id_not_by_row(tmp_path: Path) -> None:
    pixels = write_pixel_competition(tmp_path / "raw", labels=[1, 2] * 5, test_ids=[3, 1, 5, 2, 4])
    competition = read_competition(tmp_path / "raw", check_images=False)
    assert competition.test_ids == ["1", "2", "3", "4", "5"]
    images = competition.test_images.load(img_size=4)[..., 0].reshape(5, 16)
    np.testing.assert_array_equal(images, pixels)  # image of id k is the row whose ImageId is k


def test_row_order_is_used_only_without_ids_and_the_log_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    pixels = write_pixel_competition(tmp_path / "raw", labels=[1, 2] * 5)
    with caplog.at_level(logging.INFO):
        competition = read_competition(tmp_path / "raw", check_images=False)
    np.testing.assert_array_equal(competition.test_images.load(img_size=4)[..., 0].reshape(5, 16), pixels)
    assert "test.csv has no id column: its rows are paired with the ids of sample_submission.csv by position" in (
        caplog.text
    )


def test_a_test_id_with_no_row_stops_the_stage(tmp_path: Path) -> None:
    write_pixel_competition(tmp_path / "raw", labels=[1, 2] * 5, test_ids=[3, 1, 5, 2, 4])
    test = pd.read_csv(tmp_path / "raw/test.csv")
    test.loc[0, "ImageId"] = 9
    test.to_csv(tmp_path / "raw/test.csv", index=False)
    with pytest.raises(IngestError, match=r"no row of test.csv has id '3' \(column 'ImageId'\)"):
        read_competition(tmp_path / "raw", check_images=False)


def test_integer_labels_written_as_decimals_are_read_and_submitted_as_integers(tmp_path: Path) -> None:
    write_pixel_competition(tmp_path / "raw", labels=[1.0, 2.0, 10.0] * 4)
    competition = read_competition(tmp_path / "raw", check_images=False)
    assert competition.classes == ["1", "2", "10"]
    assert [p.action for p in competition.problems] == ["converted"]
    sample = read_sample_submission(competition.sample_submission)
    probs = np.eye(3)[[0, 1, 2, 0, 1]]
    submission = make_submission(sample, competition.test_ids, probs, competition.classes)
    assert submission["Label"].tolist() == ["1", "2", "10", "1", "2"]


def test_a_submission_keeps_the_samples_integer_type_even_with_decimal_classes(tmp_path: Path) -> None:
    write_pixel_competition(tmp_path / "raw", labels=[1, 2] * 5)
    sample = read_sample_submission(tmp_path / "raw/sample_submission.csv")
    submission = make_submission(sample, sample.ids, np.eye(2)[[0, 1, 0, 1, 0]], ["1.0", "2.0"])
    assert submission["Label"].tolist() == ["1", "2", "1", "2", "1"]


def test_the_checker_flags_a_decimal_label_against_an_integer_sample(tmp_path: Path) -> None:
    write_pixel_competition(tmp_path / "raw", labels=[1, 2] * 5)
    sample = read_sample_submission(tmp_path / "raw/sample_submission.csv")
    text = "ImageId,Label\n1,1.0\n2,2\n3,1\n4,2\n5,1\n"
    check = check_submission_text(text, sample, ["1.0", "2"])
    assert [(p.kind, str(p)) for p in check.problems] == [
        ("label_type", "line 2: label '1.0' is a decimal; the sample's labels are integers (1)")
    ]
    words = read_sample_submission(_write(tmp_path / "words.csv", "id,label\na,cat\nb,cat\n"))
    assert check_submission_text("id,label\na,1.0\nb,dog\n", words, None).ok  # only an integer sample's type is checked


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def write_labels_competition(root: Path, labels: list[str]) -> None:
    """train/<n>.png with trainLabels.csv (id, label) as given, test/ of three images, a sample submission."""
    for n in range(len(labels)):
        (root / "train").mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(root / "train" / f"{n}.png"), np.full((6, 6), 20 * n % 256, np.uint8))
    pd.DataFrame({"id": range(len(labels)), "label": labels}).to_csv(root / "trainLabels.csv", index=False)
    (root / "test").mkdir()
    for n in range(3):
        cv2.imwrite(str(root / "test" / f"{n}.png"), np.zeros((6, 6), np.uint8))
    pd.DataFrame({"id": range(3), "label": "zero"}).to_csv(root / "sampleSubmission.csv", index=False)


SPELLINGS = ["zero", "zero ", " zero", "Zero", "one", "one", "one ", "ONE", "two", "two", "t\u0077o", "Cafe\u0301"]


def test_labels_differing_in_case_or_whitespace_are_merged_and_reported(tmp_path: Path) -> None:
    write_labels_competition(tmp_path / "raw", SPELLINGS)
    competition = read_competition(tmp_path / "raw", check_images=False)
    assert competition.classes == ["Caf\u00e9", "one", "two", "zero"]  # NFC: e + combining accent -> é
    assert competition.train_labels[:4] == ["zero"] * 4
    report = {p.problem: p.action for p in competition.problems}
    assert report == {
        "label 'Zero' (1 rows) differs from 'zero' only in case or whitespace": "merged",
        "label ' zero' (1 rows) differs from 'zero' only in case or whitespace": "merged",
        "label 'zero ' (1 rows) differs from 'zero' only in case or whitespace": "merged",
        "label 'ONE' (1 rows) differs from 'one' only in case or whitespace": "merged",
        "label 'one ' (1 rows) differs from 'one' only in case or whitespace": "merged",
    }


def test_split_writes_them_to_the_report_or_stops_under_similar_labels_stop(tmp_path: Path) -> None:
    paths = Paths(tmp_path)
    write_labels_competition(paths.raw, SPELLINGS * 2)
    params_file = _write(paths.params, "n_folds: 2\ndata: {similar_labels: stop}\n")
    with pytest.raises(IngestError, match="5 label spelling.* differ from another only in case or whitespace"):
        split.run(load_params(params_file), paths)
    report = pd.read_csv(paths.ingest_report, keep_default_na=False)
    assert report["action"].tolist() == ["stop"] * 5
    assert not paths.folds.exists()
    params_file.write_text("n_folds: 2\ndata: {similar_labels: merge}\n")
    split.run(load_params(params_file), paths)
    folds = pd.read_csv(paths.folds, dtype=str)
    assert sorted(set(folds["label"])) == ["Caf\u00e9", "one", "two", "zero"]
    report = pd.read_csv(paths.ingest_report, keep_default_na=False)
    assert report["action"].tolist() == ["merged"] * 5
