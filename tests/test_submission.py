"""Submissions follow the sample submission exactly and are scored like the leaderboard."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import log_loss

from kagglecv.params import ParamsError, load_params
from kagglecv.scoring import score_submission
from kagglecv.submission import (
    PROB_EPS,
    SubmissionError,
    make_submission,
    read_sample_submission,
)

CLASSES = ["Black-grass", "Loose Silky-bent", "Maize"]


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_label_submission_keeps_id_text_order_and_label_spelling(tmp_path: Path) -> None:
    sample = read_sample_submission(write(tmp_path / "s.csv", "Id,Category\n0003,x\n0001,x\n0002,x\n"))
    test_ids = ["0001", "0002", "0003"]  # in the image order the model saw
    probs = np.array([[0.1, 0.8, 0.1], [0.7, 0.2, 0.1], [0.1, 0.1, 0.8]])
    frame = make_submission(sample, test_ids, probs, CLASSES)
    assert frame.columns.tolist() == ["Id", "Category"]
    assert frame["Id"].tolist() == ["0003", "0001", "0002"]
    assert frame["Category"].tolist() == ["Maize", "Loose Silky-bent", "Black-grass"]


def test_probability_submission_follows_sample_columns_sums_to_one_and_is_clipped(tmp_path: Path) -> None:
    text = "id,Maize,Black-grass,Loose Silky-bent\na,0,0,0\nb,0,0,0\n"
    sample = read_sample_submission(write(tmp_path / "s.csv", text))
    probs = np.array([[1.0, 0.0, 0.0], [0.2, 0.3, 0.5]])
    frame = make_submission(sample, ["a", "b"], probs, CLASSES)
    assert frame.columns.tolist() == ["id", "Maize", "Black-grass", "Loose Silky-bent"]
    values = frame.iloc[:, 1:].to_numpy(float)
    np.testing.assert_allclose(values.sum(1), 1.0)
    assert values.min() >= PROB_EPS / 2 and values.max() < 1.0
    np.testing.assert_allclose(values[1], [0.5, 0.2, 0.3])


def test_sample_ids_without_test_images_are_refused(tmp_path: Path) -> None:
    sample = read_sample_submission(write(tmp_path / "s.csv", "id,label\nzzz,a\n"))
    with pytest.raises(SubmissionError, match="1 ids have no test image"):
        make_submission(sample, ["a"], np.ones((1, 3)) / 3, CLASSES)


def test_accuracy_ignores_kaggle_usage_column(tmp_path: Path) -> None:
    solution = write(tmp_path / "solution.csv", "Id,Category,Usage\n0001,Maize,Public\n0002,Black-grass,Private\n")
    submission = pd.DataFrame({"Id": ["0002", "0001"], "Category": ["Black-grass", "Loose Silky-bent"]})
    assert score_submission(submission, solution) == {"accuracy": 0.5}


@pytest.mark.parametrize("one_hot", [False, True])
def test_log_loss_from_label_or_one_hot_solution(tmp_path: Path, one_hot: bool) -> None:
    truth = ["Maize", "Black-grass"]
    if one_hot:
        text = "id,Black-grass,Loose Silky-bent,Maize,Usage\nb,1,0,0,Public\na,0,0,1,Private\n"
    else:
        text = "id,species\nb,Black-grass\na,Maize\n"
    probs = np.array([[0.2, 0.1, 0.7], [0.6, 0.3, 0.1]])  # columns in CLASSES order
    submission = pd.DataFrame({"id": ["a", "b"], **{c: probs[:, k] for k, c in enumerate(CLASSES)}})
    score = score_submission(submission, write(tmp_path / "solution.csv", text))
    assert score == {"log_loss": pytest.approx(log_loss(truth, probs, labels=CLASSES))}


def test_solution_missing_ids_is_an_error_naming_the_file(tmp_path: Path) -> None:
    solution = write(tmp_path / "solution.csv", "Id,Label\n1,3\n")
    with pytest.raises(SubmissionError, match=r"solution.csv: no true label for 1 submission id\(s\)"):
        score_submission(pd.DataFrame({"Id": ["1", "2"], "Label": ["3", "3"]}), solution)


def test_params_accept_each_source_and_name_bad_keys(tmp_path: Path) -> None:
    path = write(tmp_path / "params.yaml", "data:\n  source: local\n  path: comp.zip\n  layout: class_folders\n"
                 "  valid_split: holdout\n  solution: truth.csv\n")  # fmt: skip
    data = load_params(path).data
    assert (data.source, data.path, data.layout, data.valid_split, data.solution) == (
        "local", "comp.zip", "class_folders", "holdout", "truth.csv",
    )  # fmt: skip
    write(path, "data:\n  source: s3\n  layout: folders\n  competion: x\n")
    with pytest.raises(ParamsError) as caught:
        load_params(path)
    message = str(caught.value)
    assert "data.source: 's3' is not allowed" in message
    assert "data.layout: 'folders' is not allowed" in message
    assert "data.competion: unknown key (did you mean competition?)" in message
