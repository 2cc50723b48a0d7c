"""Shared fixtures: tiny competitions and params built in tmp_path, CPU only, no network."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from kagglecv.bench import copy_project
from kagglecv.params import DataParams, Params
from kagglecv.sources import write_digits

REPO = Path(__file__).resolve().parents[1]

torch.set_num_threads(2)


@pytest.fixture(scope="session")
def digits_raw(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The embedded digits competition, written once per test session."""
    root = tmp_path_factory.mktemp("digits") / "raw"
    write_digits(root, test_fraction=0.2)
    return root


@pytest.fixture(name="tiny_params")
def tiny_params_fixture() -> Params:
    """Params for a fast run: 2 folds, 2 epochs, 8x8 images."""
    return dataclasses.replace(Params(), n_folds=2, epochs=2, img_size=8, batch_size=32, patience=1, warmup_epochs=0)


def tiny_params(**data: object) -> Params:
    """The smallest real run: 2 folds, 1 epoch, softmax regression on 8x8 images, `data` as given."""
    return dataclasses.replace(
        Params(), n_folds=2, epochs=1, model="softmax_regression", img_size=8, batch_size=4, augment=[],
        data=DataParams(**data),
    )  # fmt: skip


def run_pipeline(params: Params, tmp_path: Path) -> Path:
    """download -> split -> train -> evaluate -> predict in `tmp_path`; the submission's path."""
    from kagglecv.stages import download, evaluate, predict, split, train

    raw, folds, models = tmp_path / "data/raw", tmp_path / "data/folds.csv", tmp_path / "models"
    download.run(params, out_dir=raw)
    split.run(params, raw_dir=raw, out_path=folds)
    oof = tmp_path / "predictions/oof.csv"
    train.run(
        params, raw_dir=raw, folds_path=folds, models_dir=models, oof_path=oof,
        live_dir=tmp_path / "dvclive", metrics_path=tmp_path / "metrics/train.json",
    )  # fmt: skip
    evaluate.run(oof_path=oof, metrics_path=tmp_path / "metrics/cv.json", confusion_path=tmp_path / "plots/c.csv")
    submission = tmp_path / "submissions/submission.csv"
    predict.run(
        params, raw_dir=raw, models_dir=models, submission_path=submission,
        probs_path=tmp_path / "predictions/test_probs.csv", metrics_path=tmp_path / "metrics/leaderboard.json",
    )  # fmt: skip
    return submission


def make_project(root: Path, overrides: dict) -> Path:
    """A git repository at `root` holding this project's pipeline, with `overrides` in params.yaml."""
    root.mkdir(parents=True, exist_ok=True)
    copy_project(REPO, root, overrides)
    return root
