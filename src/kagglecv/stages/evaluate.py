"""Stage `evaluate`: cross-validation figures by the competition's metric, decision thresholds and pictures.

Reads params: `task`, `metric`, `img_size`, `data.layout`, `data.channels` (to show the images);
files: `predictions/oof.csv` (rows of fold -1, trained on but never validated, are left out),
`data/raw/`. Writes: `metrics/cv.json` (`cv.<metric>` first, then the task's other figures; for a
multiclass task `cv.accuracy`, `cv.macro_f1`, `cv.log_loss`: the headline `dvc exp show` lists
first), `metrics/cv_folds.json` (the same per fold, under `cv.folds.<k>`),
`predictions/thresholds.json` (the decision thresholds tuned on every fold, which `predict`
applies; see `kagglecv.metrics`), `plots/confusion.csv` (one row per image, or per true tag:
actual, predicted; drawn by `dvc plots show` as a confusion matrix), `plots/confusion.png` and
`plots/mistakes.png` (the most confident out-of-fold mistakes: image, true and predicted label).

Where the metric scores thresholded decisions (F2, kappa, ...), each fold is decided with thresholds
tuned on the other folds, so the CV figure is one no threshold has seen.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from kagglecv.artifacts import write_csv, write_json
from kagglecv.data import TRAIN_ONLY_FOLD, Competition, CompetitionError
from kagglecv.images import decode_set, with_sizes
from kagglecv.ingest import read_competition
from kagglecv.metrics import cross_validate
from kagglecv.params import Params, ParamsError, load_params
from kagglecv.paths import Paths
from kagglecv.pictures import write_confusion_image, write_image_grid
from kagglecv.runtime import main_of
from kagglecv.tasks import Task, encode_labels, task_of

log = logging.getLogger("kagglecv.evaluate")

N_MISTAKES = 32


def read_oof(path: Path, task: Task) -> pd.DataFrame:
    """The out-of-fold file, checked to hold one probability column per class of `task`."""
    if not path.exists():
        raise CompetitionError(f"{path} missing: run 'dvc repro train' first")
    oof = pd.read_csv(path, dtype={"id": str, "label": str}, keep_default_na=False)
    if list(oof.columns[3:]) != task.classes:
        raise CompetitionError(f"{path} does not hold the {task.kind} task's classes: run 'dvc repro train' again")
    return oof


def worst_mistakes(wrong: np.ndarray, confidence: np.ndarray, n: int = N_MISTAKES) -> np.ndarray:
    """Indices of the `n` wrong predictions made with the highest `confidence`, worst first."""
    wrong = np.flatnonzero(wrong)
    return wrong[np.argsort(-confidence[wrong], kind="stable")][:n]


def describe_predictions(task: Task, truth: np.ndarray, probs: np.ndarray, decided: np.ndarray) -> tuple:
    """(actual, predicted) names for the confusion matrix, and (wrong, confidence, captions) per image.

    A multilabel task's matrix pairs each true tag with the most probable tag; its images are wrong when a
    tag is, with the confidence of the most confident wrong tag."""
    names = np.asarray(task.classes)
    if not task.multilabel:
        chosen = probs[np.arange(len(probs)), decided]
        captions = [f"true {names[t]}\npred {names[d]} {c:.2f}" for t, d, c in zip(truth, decided, chosen)]
        return names[truth], names[decided], decided != truth, chosen, captions
    rows, tags = np.nonzero(truth)
    top = probs.argmax(1)
    wrong = (decided != truth).any(1)
    confidence = np.abs(probs - truth).max(1)
    tags_of = lambda row: " ".join(names[row.astype(bool)]) or "-"  # noqa: E731
    captions = [f"true {tags_of(t)}\npred {tags_of(d)}" for t, d in zip(truth, decided)]
    return names[tags], names[top[rows]], wrong, confidence, captions


def run(params: Params, paths: Paths = Paths()) -> dict:
    """Score the out-of-fold probabilities by the competition's metric (overall, and per fold), tune and write
    the decision thresholds; draw the confusion matrix and the worst mistakes."""
    competition = read_competition(paths.raw, params.data.layout, labels_file=params.data.labels_file,
                                   max_megapixels=params.data.max_megapixels)  # fmt: skip
    task = task_of(params, competition)
    oof = read_oof(paths.oof, task)
    if oof["id"].tolist() != competition.train_ids:
        raise CompetitionError(f"{paths.oof} does not match {paths.raw}: run 'dvc repro train' again")
    oof = oof[oof["fold"] != TRAIN_ONLY_FOLD]  # a holdout split's training rows have no out-of-fold probabilities
    probs, truth = oof[task.classes].to_numpy(np.float64), encode_labels(task, oof["label"].tolist())
    cv = cross_validate(task.metric, task.kind, truth, probs, oof["fold"].to_numpy())
    write_json(paths.cv_metrics, {"cv": cv.scores})
    write_json(paths.cv_folds_metrics, {"cv": {"folds": cv.per_fold}})
    write_thresholds(paths.thresholds, task, cv.thresholds)
    actual, predicted, wrong, confidence, captions = describe_predictions(task, truth, probs, cv.decisions)
    write_csv(paths.confusion_plot, pd.DataFrame({"actual": actual, "predicted": predicted}))
    index = {c: i for i, c in enumerate(task.classes)}
    write_confusion_image(paths.confusion_image, np.array([index[a] for a in actual], dtype=np.int64),
                          np.array([index[p] for p in predicted], dtype=np.int64), task.classes)  # fmt: skip
    worst = worst_mistakes(wrong, confidence)
    rows = oof.index.to_numpy()[worst]  # positions among all training images
    write_mistakes(paths, params, competition, rows, [captions[i] for i in worst])
    log.info("%s task, cv %s", task.kind, "  ".join(f"{k} {v:.4f}" for k, v in cv.scores.items()))
    return {**cv.scores, "folds": cv.per_fold}


def write_thresholds(path: Path, task: Task, thresholds: list[float]) -> None:
    """The decision rule `predict` applies: the task, metric, classes and thresholds tuned on every fold."""
    write_json(path, {"task": task.kind, "metric": task.metric, "classes": task.classes, "thresholds": thresholds})


def write_mistakes(paths: Paths, params: Params, competition: Competition, rows: np.ndarray, captions: list[str]) -> None:
    """The images at `rows` of the training set, as the model saw them (at img_size), with captions."""
    img_size = with_sizes(params, competition.train_images).img_size  # as train chose it
    shown = competition.train_images.select(rows.tolist())  # decode only the images drawn, in memory
    write_image_grid(paths.mistakes_image, decode_set(shown, img_size=img_size, channels=params.data.channels), captions)


main = main_of(lambda: run(load_params()), ParamsError, CompetitionError)

if __name__ == "__main__":
    main()
