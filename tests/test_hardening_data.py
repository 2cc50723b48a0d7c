"""Ingest checks: every bad input is named with its file; bad training images are left out and listed
(or stop `split`); a problem with the test set stops the stage; earlier outputs stay as they were."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

import kagglecv.ingest
from kagglecv.data import read_folds
from kagglecv.ingest import read_competition
from kagglecv.params import load_params
from kagglecv.paths import Paths
from kagglecv.stages import predict, split, train
from tests.hardening_fixtures import (
    inside,
    make_project,
    run_main,
    run_stage_process,
    snapshot,
    trained_project_fixtures,
    truncate,
    write_params,
    write_png,
)

REPORT = "data/ingest_report.csv"


trained, project = trained_project_fixtures()  # a clean competition's whole pipeline, run once; a copy per test


def read_report(project: Path) -> pd.DataFrame:
    return pd.read_csv(project / REPORT, dtype=str, keep_default_na=False)


def set_labels(project: Path, frame: pd.DataFrame) -> None:
    frame.to_csv(project / "data/raw/trainLabels.csv", index=False)


def labels(project: Path) -> pd.DataFrame:
    return pd.read_csv(project / "data/raw/trainLabels.csv", dtype=str, keep_default_na=False)


def truncated_jpeg(project: Path, image_id: int) -> str:
    """Replace train/<id>.png by a JPEG cut short; its file name relative to data/raw."""
    raw = project / "data/raw"
    (raw / f"train/{image_id}.png").unlink()
    rng = np.random.default_rng(image_id)
    assert cv2.imwrite(str(raw / f"train/{image_id}.jpg"), rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))
    truncate(raw / f"train/{image_id}.jpg")
    return f"train/{image_id}.jpg"


def split_fails(project: Path, capsys: pytest.CaptureFixture[str], *expected: str) -> str:
    """Run split's main(): exit 1, one `error:` line holding `expected`, and nothing but the report changed."""
    before = snapshot(project)
    code, err = run_main(split, project, capsys)
    assert code == 1
    assert err.startswith("error: ") and err.count("\n") == 1, err
    for text in expected:
        assert text in err, (text, err)
    after = snapshot(project)
    before.pop(REPORT), after.pop(REPORT)
    assert after == before
    return err


def test_truncated_training_jpeg_is_left_out_listed_and_not_trained_on(project: Path) -> None:
    bad = truncated_jpeg(project, 3)
    with inside(project):
        params = load_params()
        summary = split.run(params)
        report = read_report(project)
        folds = read_folds(Paths().folds)
        train.run(params)
        oof = pd.read_csv("predictions/oof.csv", dtype={"id": str})
    assert summary["excluded"] == 1 and summary["images"] == 11
    assert report.to_dict("records") == [
        {"part": "train", "file": bad, "id": "3", "problem": report["problem"][0], "action": "excluded"}
    ]
    assert report["problem"][0].startswith("truncated or corrupt image (image file is truncated")
    assert "3" not in folds["id"].tolist() and len(folds) == 11
    assert oof["id"].tolist() == folds["id"].tolist()  # train skips it too


@pytest.mark.slow  # another process of the stack
def test_truncated_training_jpeg_stops_split_as_a_process_under_bad_images_stop(project: Path) -> None:
    bad = truncated_jpeg(project, 3)
    write_params(project, data={"bad_images": "stop"})
    before = snapshot(project)
    done = run_stage_process(project, "split")
    assert done.returncode == 1
    error = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert len(error) == 1 and "Traceback" not in done.stderr, done.stderr
    assert f"{bad}: truncated or corrupt image" in error[0]
    assert "data.bad_images is stop" in error[0] and "set data.bad_images: skip" in error[0]
    assert f"all listed in {REPORT}" in error[0]
    assert read_report(project)["action"].tolist() == ["stop"]
    after = snapshot(project)
    assert {k: v for k, v in after.items() if k != REPORT} == {k: v for k, v in before.items() if k != REPORT}


@pytest.mark.parametrize("policy", ["skip", "stop"])
def test_image_listed_in_the_csv_but_missing(project: Path, policy: str, capsys: pytest.CaptureFixture[str]) -> None:
    (project / "data/raw/train/5.png").unlink()
    write_params(project, data={"bad_images": policy})
    if policy == "stop":
        split_fails(project, capsys, "trainLabels.csv (id 5): no image file for id '5' in train/")
        return
    with inside(project):
        split.run(load_params())
    row = read_report(project).iloc[0]
    assert (row["file"], row["id"], row["action"]) == ("trainLabels.csv", "5", "excluded")
    assert "5" not in read_folds(project / "data/folds.csv")["id"].tolist()


def test_files_no_csv_refers_to_are_listed_but_harmless(project: Path) -> None:
    rng = np.random.default_rng(9)
    write_png(project / "data/raw/train/99.png", 0, rng)
    write_png(project / "data/raw/test/77.png", 0, rng)
    with inside(project):
        summary = split.run(load_params())
    report = read_report(project)
    assert sorted(report["file"]) == ["test/77.png", "train/99.png"]
    assert set(report["action"]) == {"ignored"} and set(report["part"]) == {"unused"}
    assert summary == {"images": 12, "folds": 2, "excluded": 0}


def test_duplicate_ids_are_left_out_or_stop(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    frame = labels(project)
    same = frame[frame["id"] == "4"]  # 4 again with the same label: the first row is kept
    clash = frame[frame["id"] == "7"].assign(label="frog")  # 7 again with another label: neither row is trusted
    set_labels(project, pd.concat([frame, same, clash]))
    with inside(project):
        split.run(load_params())
    report = read_report(project)
    assert report["id"].tolist() == ["7", "4", "7"]
    assert report["file"].unique().tolist() == ["trainLabels.csv"]
    assert "appears more than once, with different labels" in report["problem"][0]
    assert "appears more than once; the first row is kept" in report["problem"][1]
    folds = read_folds(project / "data/folds.csv")["id"].tolist()
    assert folds.count("4") == 1 and "7" not in folds
    write_params(project, data={"bad_images": "stop"})
    split_fails(project, capsys, "trainLabels.csv (id 7): id '7' appears more than once")


def test_empty_and_unknown_labels_are_left_out(project: Path) -> None:
    frame = labels(project)
    frame.loc[frame["id"] == "6", "label"] = ""
    frame.loc[frame["id"] == "8", "label"] = "bird"  # no column for it in a probability sample submission
    set_labels(project, frame)
    sample = pd.DataFrame({"id": range(1, 5), "cat": 0.3, "dog": 0.3, "frog": 0.4})
    sample.to_csv(project / "data/raw/sampleSubmission.csv", index=False)
    with inside(project):
        split.run(load_params())
    report = read_report(project).set_index("id")
    assert report.loc["6", "problem"] == "empty label"
    assert report.loc["8", "problem"] == "label 'bird' is not a column of sampleSubmission.csv"
    assert set(report["action"]) == {"excluded"}


def test_class_with_fewer_images_than_n_folds_stops(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_params(project, n_folds=5)  # 4 images per class
    split_fails(project, capsys, "n_folds: 5 folds need at least 5 images per class", "'cat' (4)", "lower n_folds")


def test_empty_test_set_stops(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (project / "data/raw/sampleSubmission.csv").write_text("id,label\n")
    split_fails(project, capsys, "sampleSubmission.csv: the test set is empty")


def test_sample_submission_id_without_a_test_image_stops(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with open(project / "data/raw/sampleSubmission.csv", "a") as f:
        f.write("9,cat\n")
    split_fails(project, capsys, "sampleSubmission.csv (id 9): no image file for id '9' in test/")


def test_duplicate_sample_submission_ids_stop(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with open(project / "data/raw/sampleSubmission.csv", "a") as f:
        f.write("2,cat\n")
    split_fails(project, capsys, "sampleSubmission.csv (id 2): id '2' appears more than once")


def test_bad_test_image_stops_split_and_predict_keeping_the_submission(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    truncate(project / "data/raw/test/2.png")
    split_fails(project, capsys, "test/2.png: truncated or corrupt image", "every id needs a prediction")
    before = snapshot(project)
    code, err = run_main(predict, project, capsys)
    assert code == 1 and "test/2.png: truncated or corrupt image" in err
    assert snapshot(project) == before  # submission, test probabilities and leaderboard as they were


def test_pixel_rows_with_empty_values_or_labels(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    raw = tmp_path / "data/raw"
    raw.mkdir(parents=True)
    pixels = [f"pixel{i}" for i in range(4)]
    train_frame = pd.DataFrame(np.arange(12 * 4).reshape(12, 4) % 256, columns=pixels).astype(float)
    train_frame.insert(0, "label", [str(i % 2) for i in range(12)])
    train_frame.loc[3, "pixel2"] = np.nan
    train_frame.loc[5, "label"] = ""
    train_frame.to_csv(raw / "train.csv", index=False)
    test_frame = pd.DataFrame(np.ones((3, 4)), columns=pixels)
    test_frame.to_csv(raw / "test.csv", index=False)
    pd.DataFrame({"ImageId": [1, 2, 3], "Label": 0}).to_csv(raw / "sample_submission.csv", index=False)
    write_params(tmp_path)
    with inside(tmp_path):
        split.run(load_params())
    report = read_report(tmp_path)
    assert report[["file", "id", "problem"]].values.tolist() == [
        ["train.csv", "3", "row 5: 1 empty pixel value(s)"], ["train.csv", "5", "empty label"],
    ]  # fmt: skip
    test_frame.loc[1, "pixel0"] = np.nan
    test_frame.to_csv(raw / "test.csv", index=False)
    split_fails(tmp_path, capsys, "sample_submission.csv (id 2): row 3: 1 empty pixel value(s)")


def test_every_image_is_decoded_once_then_the_verdicts_are_cached(
    trained: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = make_project(tmp_path)
    calls: list[Path] = []
    check = kagglecv.ingest.check_image
    monkeypatch.setattr(kagglecv.ingest, "check_image", lambda path, *limit: calls.append(path) or check(path, *limit))
    read_competition(project / "data/raw")
    assert sorted(p.relative_to(project / "data/raw").as_posix() for p in calls) == sorted(
        [f"train/{i}.png" for i in range(1, 13)] + [f"test/{i}.png" for i in range(1, 5)]
    )
    calls.clear()
    read_competition(project / "data/raw")  # as train and predict do after split
    assert calls == []
