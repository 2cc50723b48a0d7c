"""The embedded digits competition has Kaggle's Digit Recognizer layout and an honest solution."""

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_digits

from kagglecv.data import CompetitionError, sort_labels
from kagglecv.ingest import read_competition


def test_digits_has_digit_recognizer_layout(digits_raw):
    train = pd.read_csv(digits_raw / "train.csv")
    test = pd.read_csv(digits_raw / "test.csv")
    sample = pd.read_csv(digits_raw / "sample_submission.csv")
    assert list(train.columns) == ["label"] + [f"pixel{i}" for i in range(64)]
    assert list(test.columns) == [f"pixel{i}" for i in range(64)]
    assert list(sample.columns) == ["ImageId", "Label"]
    assert sample["ImageId"].tolist() == list(range(1, len(test) + 1))
    assert len(train) + len(test) == 1797
    assert 0.18 < len(test) / 1797 < 0.22
    assert train.filter(like="pixel").to_numpy().max() == 255


def test_solution_is_disjoint_from_training_and_true(digits_raw):
    train = pd.read_csv(digits_raw / "train.csv")
    test = pd.read_csv(digits_raw / "test.csv")
    solution = pd.read_csv(digits_raw / "solution.csv")
    assert solution["ImageId"].tolist() == pd.read_csv(digits_raw / "sample_submission.csv")["ImageId"].tolist()
    # Every image of the original set lands in exactly one part, with its true label.
    digits = load_digits()
    original = {tuple(np.rint(x * 255 / 16).astype(int)): int(y) for x, y in zip(digits.data, digits.target)}
    train_rows = {tuple(r) for r in train.filter(like="pixel").to_numpy()}
    test_rows = [tuple(r) for r in test.to_numpy()]
    assert all(original[row] == label for row, label in zip(test_rows, solution["Label"]))
    assert sum(row in train_rows for row in test_rows) <= 3  # digits holds a few exact duplicate images
    # Stratified: every class appears in the test part in about its overall share.
    shares = solution["Label"].value_counts(normalize=True)
    assert (shares - 0.1).abs().max() < 0.02


def test_read_competition_gives_uniform_description(digits_raw):
    comp = read_competition(digits_raw)
    assert comp.classes == [str(i) for i in range(10)]
    assert len(comp.train_ids) == len(comp.train_labels) == len(comp.train_images)
    images = comp.train_images.load(img_size=16)
    assert images.shape == (len(comp.train_ids), 16, 16, 1) and images.dtype == np.uint8
    assert comp.test_images.load(img_size=8, channels=3).shape[1:] == (8, 8, 3)
    assert comp.solution is not None and comp.solution.name == "solution.csv"


def test_labels_sort_numerically_when_numeric():
    assert sort_labels(["10", "9", "1"]) == ["1", "9", "10"]
    assert sort_labels(["cat", "ant"]) == ["ant", "cat"]


def test_missing_competition_names_the_fix(tmp_path):
    with pytest.raises(CompetitionError, match="dvc repro download"):
        read_competition(tmp_path / "raw")
