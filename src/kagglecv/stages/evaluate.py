"""Stage `evaluate`: cross-validation metrics from the out-of-fold probabilities.

Reads: `predictions/oof.csv` (rows of fold -1, trained on but never validated, are left out).
Writes: `metrics/cv.json` (`cv.accuracy`, `cv.macro_f1`, `cv.log_loss`, and the same per fold
under `cv.folds.<k>`) and `plots/confusion.csv` (one row per image: actual, predicted), drawn
by `dvc plots show` as a confusion matrix.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import accuracy_score, f1_score, log_loss

from kagglecv.artifacts import write_csv, write_json
from kagglecv.data import TRAIN_ONLY_FOLD, CompetitionError
from kagglecv.runtime import main_of
from kagglecv.stages.train import OOF_FILE

log = logging.getLogger("kagglecv.evaluate")

CV_METRICS = Path("metrics/cv.json")
CONFUSION_PLOT = Path("plots/confusion.csv")


def classification_metrics(labels: pd.Series, probs: np.ndarray, classes: list[str]) -> dict[str, float]:
    predicted = np.asarray(classes)[probs.argmax(1)]
    probs = probs / probs.sum(1, keepdims=True)  # undo the CSV's rounding
    return {
        "accuracy": round(float(accuracy_score(labels, predicted)), 6),
        "macro_f1": round(float(f1_score(labels, predicted, average="macro", labels=classes)), 6),
        "log_loss": round(float(log_loss(labels, probs, labels=classes)), 6),
    }


def run(oof_path: Path = OOF_FILE, metrics_path: Path = CV_METRICS, confusion_path: Path = CONFUSION_PLOT) -> dict:
    if not oof_path.exists():
        raise CompetitionError(f"{oof_path} missing: run 'dvc repro train' first")
    oof = pd.read_csv(oof_path, dtype={"id": str, "label": str}, keep_default_na=False)
    oof = oof[oof["fold"] != TRAIN_ONLY_FOLD]  # a holdout split's training rows have no out-of-fold probabilities
    classes = [c for c in oof.columns if c not in ("id", "label", "fold")]
    probs = oof[classes].to_numpy(np.float64)
    metrics = classification_metrics(oof["label"], probs, classes)
    metrics["folds"] = {
        str(k): classification_metrics(part["label"], part[classes].to_numpy(np.float64), classes)
        for k, part in oof.groupby("fold")
    }
    write_json(metrics_path, {"cv": metrics})
    write_csv(confusion_path, pd.DataFrame({"actual": oof["label"], "predicted": np.asarray(classes)[probs.argmax(1)]}))
    log.info("cv accuracy %.4f  macro F1 %.4f  log loss %.4f", metrics["accuracy"], metrics["macro_f1"], metrics["log_loss"])
    return metrics


main = main_of(run, CompetitionError)

if __name__ == "__main__":
    main()
