"""Every file and folder the pipeline reads or writes, in one place.

Stages take a `Paths` and use only its attributes; `Paths()` is the repository root as `dvc.yaml`
names the files, `Paths(tmp_path)` the same layout under a test's folder.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Paths:
    root: Path = Path(".")

    @property
    def params(self) -> Path:
        return self.root / "params.yaml"

    @property
    def lock(self) -> Path:
        return self.root / "dvc.lock"

    # download, split
    @property
    def raw(self) -> Path:
        return self.root / "data/raw"

    @property
    def folds(self) -> Path:
        return self.root / "data/folds.csv"

    @property
    def ingest_report(self) -> Path:
        return self.root / "data/ingest_report.csv"

    # train
    @property
    def models(self) -> Path:
        return self.root / "models"

    @property
    def oof(self) -> Path:
        return self.root / "predictions/oof.csv"

    @property
    def pseudo_labels(self) -> Path:
        return self.root / "predictions/pseudo_labels.csv"

    @property
    def live(self) -> Path:
        return self.root / "dvclive"

    @property
    def augmented_plot(self) -> Path:
        return self.root / "plots/augmented.png"

    @property
    def train_metrics(self) -> Path:
        return self.root / "metrics/train.json"

    @property
    def train_folds_metrics(self) -> Path:
        return self.root / "metrics/train_folds.json"

    @property
    def resume(self) -> Path:
        return self.root / ".kagglecv/resume"  # git-ignored and no DVC output: it outlives an interrupted run

    @property
    def train_lock(self) -> Path:
        return self.root / ".kagglecv/train.lock"  # held while the train stage runs: one per workspace

    # evaluate
    @property
    def cv_metrics(self) -> Path:
        return self.root / "metrics/cv.json"

    @property
    def cv_folds_metrics(self) -> Path:
        return self.root / "metrics/cv_folds.json"

    @property
    def confusion_plot(self) -> Path:
        return self.root / "plots/confusion.csv"

    @property
    def confusion_image(self) -> Path:
        return self.root / "plots/confusion.png"

    @property
    def mistakes_image(self) -> Path:
        return self.root / "plots/mistakes.png"

    # predict
    @property
    def submission(self) -> Path:
        return self.root / "submissions/submission.csv"

    @property
    def thresholds(self) -> Path:
        return self.root / "predictions/thresholds.json"

    @property
    def test_probs(self) -> Path:
        return self.root / "predictions/test_probs.csv"

    @property
    def test_views(self) -> Path:
        return self.root / "predictions/test_views.npz"

    @property
    def leaderboard_metrics(self) -> Path:
        return self.root / "metrics/leaderboard.json"

    @property
    def predict_metrics(self) -> Path:
        return self.root / "metrics/predict.json"

    # outside the pipeline
    @property
    def blend_submission(self) -> Path:
        return self.root / "submissions/blend.csv"

    @property
    def blend_oof(self) -> Path:
        return self.root / "predictions/blend_oof.csv"

    @property
    def blend_metrics(self) -> Path:
        return self.root / "metrics/blend.json"

    @property
    def lr_find_plot(self) -> Path:
        return self.root / "plots/lr_find.png"

    @property
    def kaggle_metrics(self) -> Path:
        return self.root / "metrics/kaggle.json"  # the last submission's leaderboard scores (python -m kagglecv.submit)

    @property
    def submission_history(self) -> Path:
        return self.root / "submissions/history.csv"  # every submission: experiment, commit, cv and leaderboard
