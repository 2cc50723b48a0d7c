"""Stage `evaluate`: cross-validation metrics and pictures from the out-of-fold probabilities.

Reads params: `img_size`, `data.layout`, `data.channels` (to show the images); files:
`predictions/oof.csv` (rows of fold -1, trained on but never validated, are left out), `data/raw/`.
Writes: `metrics/cv.json` (`cv.accuracy`, `cv.macro_f1`,
`cv.log_loss`: the headline `dvc exp show` lists first), `metrics/cv_folds.json` (the same per fold,
under `cv.folds.<k>`), `plots/confusion.csv` (one row per
image: actual, predicted; drawn by `dvc plots show` as a confusion matrix), `plots/confusion.png`
and `plots/mistakes.png` (the most confident out-of-fold mistakes: image, true and predicted
label, confidence).
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
from sklearn.metrics import accuracy_score, f1_score, log_loss

from kagglecv.artifacts import write_csv, write_json
from kagglecv.data import TRAIN_ONLY_FOLD, CompetitionError
from kagglecv.images import decode_set, with_sizes
from kagglecv.ingest import read_competition
from kagglecv.params import Params, ParamsError, load_params
from kagglecv.paths import Paths
from kagglecv.pictures import write_confusion_image, write_image_grid
from kagglecv.runtime import main_of

log = logging.getLogger("kagglecv.evaluate")

N_MISTAKES = 32


def classification_metrics(labels: pd.Series, probs: np.ndarray, classes: list[str]) -> dict[str, float]:
    predicted = np.asarray(classes)[probs.argmax(1)]
    probs = probs / probs.sum(1, keepdims=True)  # undo the CSV's rounding
    return {
        "accuracy": round(float(accuracy_score(labels, predicted)), 6),
        "macro_f1": round(float(f1_score(labels, predicted, average="macro", labels=classes)), 6),
        "log_loss": round(float(log_loss(labels, probs, labels=classes)), 6),
    }


def worst_mistakes(actual: np.ndarray, probs: np.ndarray, n: int = N_MISTAKES) -> np.ndarray:
    """Indices of the `n` misclassified images predicted with the highest confidence, worst first."""
    predicted = probs.argmax(1)
    wrong = np.flatnonzero(predicted != actual)
    return wrong[np.argsort(-probs[wrong, predicted[wrong]], kind="stable")][:n]


def run(params: Params, paths: Paths = Paths()) -> dict:
    """Score the out-of-fold probabilities (overall, and per fold); draw the confusion matrix and the worst mistakes."""
    oof_path = paths.oof
    if not oof_path.exists():
        raise CompetitionError(f"{oof_path} missing: run 'dvc repro train' first")
    oof = pd.read_csv(oof_path, dtype={"id": str, "label": str}, keep_default_na=False)
    train_ids = oof["id"].tolist()
    oof = oof[oof["fold"] != TRAIN_ONLY_FOLD]  # a holdout split's training rows have no out-of-fold probabilities
    classes = [c for c in oof.columns if c not in ("id", "label", "fold")]
    probs = oof[classes].to_numpy(np.float64)
    metrics = classification_metrics(oof["label"], probs, classes)
    per_fold = {
        str(k): classification_metrics(part["label"], part[classes].to_numpy(np.float64), classes)
        for k, part in oof.groupby("fold")
    }
    write_json(paths.cv_metrics, {"cv": metrics})
    write_json(paths.cv_folds_metrics, {"cv": {"folds": per_fold}})
    actual = np.array([classes.index(label) for label in oof["label"]])
    predicted = probs.argmax(1)
    write_csv(paths.confusion_plot, pd.DataFrame({"actual": oof["label"], "predicted": np.asarray(classes)[predicted]}))
    write_confusion_image(paths.confusion_image, actual, predicted, classes)
    worst = worst_mistakes(actual, probs)
    captions = [f"true {classes[actual[i]]}\npred {classes[predicted[i]]} {probs[i, predicted[i]]:.2f}" for i in worst]
    rows = oof.index.to_numpy()[worst]  # positions among all training images
    write_mistakes(paths, params, train_ids, rows, captions)
    log.info("cv accuracy %.4f  macro F1 %.4f  log loss %.4f", metrics["accuracy"], metrics["macro_f1"], metrics["log_loss"])
    return {**metrics, "folds": per_fold}


def write_mistakes(paths: Paths, params: Params, train_ids: list[str], rows: np.ndarray, captions: list[str]) -> None:
    """The images at `rows` of the training set, as the model saw them (at img_size), with captions."""
    competition = read_competition(paths.raw, params.data.layout, labels_file=params.data.labels_file,
                                   max_megapixels=params.data.max_megapixels)  # fmt: skip
    if competition.train_ids != train_ids:
        raise CompetitionError(f"{paths.oof} does not match {paths.raw}: run 'dvc repro train' again")
    img_size = with_sizes(params, competition.train_images).img_size  # as train chose it
    shown = competition.train_images.select(rows.tolist())  # decode only the images drawn, in memory
    write_image_grid(paths.mistakes_image, decode_set(shown, img_size=img_size, channels=params.data.channels), captions)


main = main_of(lambda: run(load_params()), ParamsError, CompetitionError)

if __name__ == "__main__":
    main()
