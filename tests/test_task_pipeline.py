"""Tiny generated competitions of every task type, through download -> split -> train -> evaluate -> predict."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_digits

from kagglecv.bench_tasks import EXTRA_PARAMS, KINDS, write_task_competition
from kagglecv.params import DataParams
from kagglecv.paths import Paths
from kagglecv.submission import read_reference
from kagglecv.submission_check import check_submission
from tests.conftest import run_pipeline, shipped

EXPECTED = {  # task -> (task kind, metric, answer shape)
    "multilabel": ("multilabel", "f2", "tags"),
    "binary": ("binary", "roc_auc", "positive_prob"),
    "ordinal": ("ordinal", "qwk", "label"),
    "top_k": ("multiclass", "map@3", "top_k"),
}


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray]:
    """120 of scikit-learn's 8x8 digits as uint8 images (0-255) and their values."""
    data = load_digits()
    return (data.images[:120] * 16).clip(0, 255).astype(np.uint8), data.target[:120]


@pytest.mark.slow
@pytest.mark.parametrize("kind", KINDS)
def test_every_task_type_runs_scores_its_metric_and_writes_a_checked_submission(
    kind: str, tmp_path: Path, digits: tuple[np.ndarray, np.ndarray], monkeypatch: pytest.MonkeyPatch
) -> None:
    raw = write_task_competition(tmp_path / "competition", kind, *digits, test_size=0.25)
    params = shipped(n_folds=2, epochs=2, model="softmax_regression", img_size=8, batch_size=16, augment=[],
                     data=DataParams(source="local", path=str(raw)), **EXTRA_PARAMS.get(kind, {}))  # fmt: skip
    paths = Paths(tmp_path / "project")
    submission = run_pipeline(params, paths)
    task_kind, metric, answer = EXPECTED[kind]
    cv = json.loads(paths.cv_metrics.read_text())["cv"]
    assert next(iter(cv)) == metric and -1.0 <= cv[metric] <= 1.0  # kappa may fall below 0
    folds = json.loads(paths.cv_folds_metrics.read_text())["cv"]["folds"]
    assert sorted(folds) == ["0", "1"] and all(metric in f for f in folds.values())
    rule = json.loads(paths.thresholds.read_text())
    assert (rule["task"], rule["metric"]) == (task_kind, metric)
    assert len(rule["thresholds"]) == {"multilabel": 10, "binary": 1, "ordinal": 9, "top_k": 0}[kind]
    assert list(json.loads(paths.leaderboard_metrics.read_text())["leaderboard"]) == [metric]
    monkeypatch.chdir(paths.root)
    (paths.root / "params.yaml").write_text(
        f"task: auto\nmetric: {params.metric}\ndata:\n  source: local\n  path: {raw}\n"
    )  # the checker shapes the sample by the project's params
    sample, classes = read_reference(None, Paths(paths.root))
    assert sample.kind == answer
    assert check_submission(submission, sample, classes).ok
    frame = pd.read_csv(submission, dtype=str)
    solution = pd.read_csv(raw / "solution.csv", dtype=str)
    assert frame.iloc[:, 0].tolist() == solution["id"].tolist()
