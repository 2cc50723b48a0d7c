"""Task detection, multilabel folds and losses, and submissions in every shape these competitions use."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from kagglecv.engine import predict_probs, select_precision
from kagglecv.ingest import read_competition
from kagglecv.losses import build_loss
from kagglecv.metrics import MetricError
from kagglecv.stages.split import make_multilabel_folds
from kagglecv.scoring import score_submission
from kagglecv.submission import make_submission, read_sample_submission
from kagglecv.submission_check import check_submission_text
from kagglecv.tasks import Task, encode_labels, resolve_task

TAGS = ["agriculture clear primary", "clear primary", "agriculture haze", "haze primary water", "clear water"]


def resolve(labels: list[str], columns: tuple[str, ...] = ("id", "label"), answers: tuple[str, ...] = ("0",), **kw) -> Task:
    return resolve_task(task=kw.pop("task", "auto"), metric=kw.pop("metric", "auto"), labels=labels,
                        sample_columns=list(columns), sample_answers=list(answers), **kw)  # fmt: skip


def test_each_task_and_its_natural_metric_and_answer_are_read_from_the_files() -> None:
    planet = resolve(TAGS, ("image_name", "tags"), ("clear primary",))
    assert (planet.kind, planet.metric, planet.answer) == ("multilabel", "f2", "tags")
    assert planet.classes == ["agriculture", "clear", "haze", "primary", "water"]
    columns = resolve(TAGS, ("id", "agriculture", "clear", "haze", "primary", "water"), ("0",))
    assert (columns.kind, columns.metric, columns.answer) == ("multilabel", "roc_auc", "columns")
    melanoma = resolve(["0", "1", "0"], ("image_name", "target"))
    assert (melanoma.kind, melanoma.metric, melanoma.answer) == ("binary", "roc_auc", "positive_prob")
    aptos = resolve(["0", "1", "2", "3", "4"], ("id_code", "diagnosis"), metric="qwk")
    assert (aptos.kind, aptos.metric, aptos.answer) == ("ordinal", "qwk", "label")
    whales = resolve(["w_1", "w_2", "new_whale"], ("Image", "Id"), ("new_whale w_1 w_2 w_3 w_4",))
    assert (whales.kind, whales.metric, whales.answer, whales.k) == ("multiclass", "map@5", "top_k", 5)
    digits = resolve([str(d) for d in range(10)], ("ImageId", "Label"))
    assert (digits.kind, digits.metric, digits.answer) == ("multiclass", "accuracy", "label")
    probs = resolve(["cat", "dog", "fox"], ("id", "cat", "dog", "fox"))
    assert (probs.metric, probs.answer) == ("log_loss", "probs")


def test_multi_word_class_names_stay_single_labels() -> None:
    seedlings = ["Loose Silky-bent", "Common Chickweed", "Common wheat", "Fat Hen", "Charlock", "Maize"]
    assert resolve(seedlings).kind == "multiclass"
    assert resolve(["a b", "c"], from_columns=True).kind == "multilabel"  # 0/1 columns are labels whatever the words


def test_a_metric_that_does_not_fit_the_task_stops_naming_the_key() -> None:
    with pytest.raises(MetricError, match="metric: f2 does not score a multiclass task"):
        resolve(["a", "b", "c"], metric="f2")
    with pytest.raises(MetricError, match="metric: map@3 does not score a multilabel task"):
        resolve(TAGS, metric="map@3")
    with pytest.raises(MetricError, match="task: binary needs two classes"):
        resolve(["a", "b", "c"], task="binary")


def test_multilabel_folds_are_complete_deterministic_and_balance_every_label() -> None:
    rng = np.random.default_rng(0)
    tags = (rng.random((200, 6)) < [0.5, 0.3, 0.2, 0.1, 0.05, 0.4]).astype(int)
    tags[tags.sum(1) == 0, 0] = 1
    labels = [" ".join(str(j) for j in np.flatnonzero(row)) for row in tags]
    ids = [str(i) for i in range(200)]
    folds = make_multilabel_folds(ids, labels, tags, n_folds=4, seed=3)
    assert folds["id"].tolist() == ids and sorted(folds["fold"].unique()) == [0, 1, 2, 3]
    assert folds.equals(make_multilabel_folds(ids, labels, tags, n_folds=4, seed=3))
    per_fold = np.stack([tags[folds["fold"] == k].sum(0) for k in range(4)])  # (folds, labels)
    assert (per_fold.max(0) - per_fold.min(0)).max() <= 2  # each label's count alike in every fold


def test_a_labels_csv_with_a_0_1_column_per_label_reads_as_tags(tmp_path: Path) -> None:
    import cv2

    (tmp_path / "train").mkdir()
    (tmp_path / "test").mkdir()
    for name in ("a", "b", "c", "t1"):
        cv2.imwrite(str(tmp_path / ("test" if name == "t1" else "train") / f"{name}.png"), np.zeros((4, 4), np.uint8))
    (tmp_path / "train.csv").write_text("StudyId,ETT - Normal,CVC - Abnormal\na,1,0\nb,1,1\nc,0,1\n")
    (tmp_path / "sample_submission.csv").write_text("StudyId,ETT - Normal,CVC - Abnormal\nt1,0,0\n")
    competition = read_competition(tmp_path)
    assert competition.train_labels == ["ETT_-_Normal", "ETT_-_Normal CVC_-_Abnormal", "CVC_-_Abnormal"]
    assert competition.label_columns == ("ETT - Normal", "CVC - Abnormal") and not competition.problems
    task = resolve(competition.train_labels, ("StudyId", "ETT - Normal", "CVC - Abnormal"), from_columns=True)
    assert (task.kind, task.metric, task.answer) == ("multilabel", "roc_auc", "columns")
    assert encode_labels(task, competition.train_labels).tolist() == [[0, 1], [1, 1], [1, 0]]


def test_multilabel_loss_and_head_take_0_1_targets_and_give_a_sigmoid_per_label() -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
    x, y = torch.rand(8, 1, 2, 2), (torch.rand(8, 3) < 0.5).float()
    loss_fn = build_loss(name="cross_entropy", multilabel=True)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    before = loss_fn(model(x), y)
    before.backward()
    optimizer.step()
    assert loss_fn(model(x), y) < before
    assert build_loss(name="focal", multilabel=True)(model(x), y) < before  # focal: smaller than plain BCE
    batches = [((x * 255).to(torch.uint8), y)]
    probs = predict_probs(model, batches, precision=select_precision("off", "cpu"), mean=torch.zeros(1),
                          std=torch.ones(1), multilabel=True)  # fmt: skip
    assert probs.shape == (8, 3) and ((probs > 0) & (probs < 1)).all() and not np.allclose(probs.sum(1), 1)
    with pytest.raises(ValueError, match="loss: mse has no multilabel form"):
        build_loss(name="mse", multilabel=True)


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


PROBS = np.array([[0.9, 0.6, 0.1], [0.2, 0.3, 0.1], [0.1, 0.2, 0.7]])  # 3 test images, 3 classes or labels


def submit(tmp_path: Path, task: Task, sample_text: str, thresholds: list[float] | None = None) -> tuple:
    sample = read_sample_submission(write(tmp_path / "sample.csv", sample_text), task)
    frame = make_submission(sample, ["x", "y", "z"], PROBS, task.classes, task=task, thresholds=thresholds)
    text = frame.to_csv(index=False, lineterminator="\n")
    return sample, frame, text


def test_tags_submission_uses_the_thresholds_and_gives_each_image_a_tag(tmp_path: Path) -> None:
    task = Task("multilabel", "f2", ["clear", "haze", "water"], "tags")
    sample, frame, text = submit(tmp_path, task, "image_name,tags\nx,clear\ny,clear\nz,clear\n", [0.5, 0.25, 0.5])
    assert frame["tags"].tolist() == ["clear haze", "haze", "water"]  # y: haze at 0.3 >= 0.25
    assert check_submission_text(text, sample, task.classes).ok
    solution = write(tmp_path / "solution.csv", "image_name,tags,Usage\nx,clear,Public\ny,haze,Public\nz,water haze,Private\n")
    # F2 per image: x 5*0.5*1/(4*0.5+1) = 2.5/3; y 1; z precision 1 recall 1/2: 2.5/4.5
    assert score_submission(frame, solution, task, sample) == {"f2": pytest.approx((2.5 / 3 + 1 + 2.5 / 4.5) / 3)}
    bad = "image_name,tags\nx,clear clear\ny,fog\nz,\n"
    kinds = [p.kind for p in check_submission_text(bad, sample, task.classes).problems]
    assert kinds == ["duplicate_label", "unknown_label", "empty_cell"]


def test_column_per_label_submission_holds_probabilities_for_auc(tmp_path: Path) -> None:
    task = Task("multilabel", "roc_auc", ["a_b", "c", "d"], "columns")
    sample, frame, text = submit(tmp_path, task, "id,a b,c,d\nx,0,0,0\ny,0,0,0\nz,0,0,0\n")
    assert list(frame.columns) == ["id", "a b", "c", "d"] and frame["a b"].tolist() == [0.9, 0.2, 0.1]
    assert check_submission_text(text, sample, task.classes).ok
    solution = write(tmp_path / "solution.csv", "id,a b,c,d\nx,1,1,0\ny,0,0,0\nz,0,1,1\n")
    # a b: 0.9 over 0.2, 0.1 -> 1; c: positives 0.6, 0.2 against 0.3 -> 0.5; d: 0.7 over 0.1, 0.1 -> 1
    assert score_submission(frame, solution, task, sample) == {"roc_auc": pytest.approx((1 + 0.5 + 1) / 3)}
    bad = "id,a b,c,d\nx,1.5,0,0\ny,0,0,0\nz,0,0,0\n"
    assert [p.kind for p in check_submission_text(bad, sample, task.classes).problems] == ["probability_range"]


def test_positive_class_probability_submission(tmp_path: Path) -> None:
    task = Task("binary", "roc_auc", ["0", "1"], "positive_prob")
    sample, frame, text = submit(tmp_path, task, "image_name,target\nx,0\ny,0\nz,0\n")
    assert frame["target"].tolist() == [0.6, 0.3, 0.2]  # the second class's column
    assert check_submission_text(text, sample, task.classes).ok
    solution = write(tmp_path / "solution.csv", "image_name,target\nx,1\ny,0\nz,1\n")
    assert score_submission(frame, solution, task, sample) == {"roc_auc": 0.5}  # 0.6 > 0.3 > 0.2


def test_grade_submission_uses_the_tuned_cut_points(tmp_path: Path) -> None:
    task = Task("ordinal", "qwk", ["0", "1", "2"], "label")
    probs_expected = PROBS @ np.arange(3)  # 0.8, 0.5, 1.6 (rows do not sum to 1: a grade-like score)
    assert np.allclose(probs_expected, [0.8, 0.5, 1.6])
    sample, frame, text = submit(tmp_path, task, "id_code,diagnosis\nx,0\ny,0\nz,0\n", [0.6, 1.5])
    assert frame["diagnosis"].tolist() == ["1", "0", "2"]
    assert check_submission_text(text, sample, task.classes).ok
    solution = write(tmp_path / "solution.csv", "id_code,diagnosis\nx,1\ny,0\nz,2\n")
    assert score_submission(frame, solution, task, sample) == {"qwk": 1.0}


def test_top_k_submission_lists_k_labels_most_likely_first(tmp_path: Path) -> None:
    task = Task("multiclass", "map@2", ["10", "20", "30"], "top_k")
    sample, frame, text = submit(tmp_path, task, "Image,Id\nx,10 20\ny,10 20\nz,10 20\n")
    assert frame["Id"].tolist() == ["10 20", "20 10", "30 20"]
    assert check_submission_text(text, sample, task.classes).ok
    solution = write(tmp_path / "solution.csv", "Image,Id\nx,20\ny,30\nz,30\n")
    assert score_submission(frame, solution, task, sample) == {"map@2": pytest.approx((1 / 2 + 0 + 1) / 3)}
    bad = "Image,Id\nx,10 20 30\ny,10\nz,40\n"
    assert [p.kind for p in check_submission_text(bad, sample, task.classes).problems] == ["label_count", "unknown_label"]


def test_multiclass_submissions_are_as_before(tmp_path: Path) -> None:
    task = Task("multiclass", "accuracy", ["a", "b", "c"], "label")
    sample, frame, _ = submit(tmp_path, task, "id,label\nx,a\ny,a\nz,a\n")
    plain = make_submission(read_sample_submission(tmp_path / "sample.csv"), ["x", "y", "z"], PROBS, task.classes)
    assert frame.equals(plain) and frame["label"].tolist() == ["a", "b", "c"]
    solution = write(tmp_path / "solution.csv", "id,label\nx,a\ny,c\nz,c\n")
    assert score_submission(frame, solution, task, sample) == score_submission(frame, solution) == {"accuracy": 2 / 3}


def test_early_stopping_follows_the_competitions_metric() -> None:
    from kagglecv.fold_training import resolve_monitor

    planet = Task("multilabel", "f2", ["a", "b"], "tags")
    digits = Task("multiclass", "accuracy", ["0", "1", "2"], "label")
    assert resolve_monitor("auto", planet) == "metric"
    assert resolve_monitor("auto", digits) == "valid_loss"  # the shipped recipe's early stopping, unchanged
    assert resolve_monitor("metric", digits) == "metric"
    assert resolve_monitor("metric", Task("multiclass", "log_loss", ["0", "1", "2"], "probs")) == "valid_loss"
    assert resolve_monitor("valid_accuracy", planet) == "valid_accuracy"


def test_single_label_options_stop_a_multilabel_task_naming_the_keys() -> None:
    from kagglecv.fold_training import check_task_params
    from kagglecv.params import MixupParams, ParamsError
    from tests.conftest import shipped

    planet = Task("multilabel", "f2", ["a", "b"], "tags")
    params = shipped(mixup=MixupParams(mixup_alpha=0.2), class_balance="weights", loss="mse")
    with pytest.raises(ParamsError, match=r"3 problem\(s\):\n  - mixup: 'on' is for single-label tasks; set both mixup"):
        check_task_params(params, planet)
    check_task_params(params, Task("multiclass", "accuracy", ["a", "b", "c"], "label"))  # fine for one label


def test_check_params_names_an_unknown_or_unfitting_metric(tmp_path: Path) -> None:
    from kagglecv.params import ParamsError
    from kagglecv.paths import Paths
    from kagglecv.stages import check_params
    from tests.conftest import shipped

    with pytest.raises(ParamsError, match="metric: unknown metric 'auc'; choose one of auto, accuracy"):
        check_params.run(shipped(metric="auc"), Paths(tmp_path))
    with pytest.raises(ParamsError, match="metric: qwk does not score a multilabel task"):
        check_params.run(shipped(metric="qwk", task="multilabel"), Paths(tmp_path))
    assert check_params.run(shipped(metric="map@5"), Paths(tmp_path)).metric == "map@5"


def test_a_certain_sigmoid_in_float32_keeps_the_validation_loss_finite() -> None:
    from kagglecv.engine import score_probs

    probs = np.array([[1.0, 0.0], [0.0, 1.0]], np.float32)  # saturated sigmoids, as float32 holds them
    loss, accuracy = score_probs(probs, np.array([[1.0, 0.0], [1.0, 1.0]], np.float32))
    assert np.isfinite(loss) and loss > 1.0 and accuracy == 0.75


def test_predict_applies_only_the_thresholds_tuned_for_its_task(tmp_path: Path) -> None:
    import json

    from kagglecv.data import CompetitionError
    from kagglecv.stages.predict import read_thresholds

    path = tmp_path / "thresholds.json"
    grades = Task("ordinal", "qwk", ["0", "1", "2"], "label")
    assert read_thresholds(path, Task("multiclass", "accuracy", ["a", "b", "c"], "label")) == []  # needs none
    with pytest.raises(CompetitionError, match="thresholds.json missing: run 'dvc repro evaluate' first"):
        read_thresholds(path, grades)
    path.write_text(json.dumps({"task": "ordinal", "metric": "qwk", "classes": ["0", "1", "2"], "thresholds": [0.4, 1.6]}))
    assert read_thresholds(path, grades) == [0.4, 1.6]
    with pytest.raises(CompetitionError, match="is for another task or metric: run 'dvc repro evaluate' again"):
        read_thresholds(path, Task("ordinal", "accuracy", ["0", "1", "2"], "label"))
