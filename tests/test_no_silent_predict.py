"""predict compares the test predictions' class shares with the training labels' and the out-of-fold
predictions', records the distance and warns when it is implausible for the test set's size."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from kagglecv.params import load_params
from kagglecv.stages import predict
from kagglecv.submission import SHIFT_FLOOR, class_shift
from tests.hardening_fixtures import inside, trained_project_fixtures

trained, project = trained_project_fixtures()
CLASSES = ["0", "1", "2"]


def test_class_shift_is_the_total_variation_distance_with_a_limit_that_shrinks_with_the_test_set() -> None:
    probs = np.eye(3)[[0] * 50 + [1] * 30 + [2] * 20]  # shares 0.5, 0.3, 0.2
    distance, limit = class_shift(probs, np.array([1.0, 1.0, 1.0]))
    assert distance == pytest.approx(0.5 * ((0.5 - 1 / 3) + (1 / 3 - 0.3) + (1 / 3 - 0.2)))
    assert class_shift(probs, np.array([50.0, 30.0, 20.0]))[0] == pytest.approx(0.0)
    few = class_shift(np.eye(3)[[0, 1, 2]], np.ones(3))[1]
    many = class_shift(np.eye(3)[[0, 1, 2] * 10_000], np.ones(3))[1]
    assert few > many == SHIFT_FLOOR


def write_oof(path: Path, predicted: list[int]) -> None:
    probs = np.eye(3)[predicted]
    frame = pd.DataFrame(probs, columns=CLASSES)
    frame.insert(0, "fold", 0)
    frame.insert(0, "label", [CLASSES[k] for k in predicted])
    frame.insert(0, "id", [str(i) for i in range(len(predicted))])
    frame.to_csv(path, index=False)


def test_a_test_set_predicted_unlike_training_warns(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    train_labels = ["0", "1", "2"] * 100
    write_oof(tmp_path / "oof.csv", [0, 1, 2] * 100)
    with caplog.at_level(logging.WARNING):
        alike = predict.measure_shift(np.eye(3)[[0, 1, 2] * 40], CLASSES, train_labels, tmp_path / "oof.csv")
    assert alike < 0.01 and not caplog.records
    with caplog.at_level(logging.WARNING):
        shifted = predict.measure_shift(np.eye(3)[[0] * 120], CLASSES, train_labels, tmp_path / "oof.csv")
    assert shifted == pytest.approx(2 / 3, abs=1e-3)
    warned = [r.getMessage() for r in caplog.records]
    assert len(warned) == 2 and "unlike the training labels (total variation 0.667" in warned[0]
    assert "unlike the out-of-fold predictions" in warned[1]


def test_predict_records_the_distribution_shift_in_its_metrics(project: Path) -> None:
    with inside(project):
        predict.run(load_params())
    shift = json.loads((project / "metrics/predict.json").read_text())["predict"]["distribution_shift"]
    assert 0.0 <= shift <= 1.0
