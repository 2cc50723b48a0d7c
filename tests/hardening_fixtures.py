"""Tiny projects for the hardening tests: a competition of PNGs and a params.yaml in tmp_path, CPU only."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import yaml

from kagglecv.params import load_params
from kagglecv.paths import Paths
from kagglecv.stages import evaluate, predict, split, train
from tests.conftest import REPO

CLASSES = ["cat", "dog", "frog"]
TINY = {
    "n_folds": 2, "epochs": 1, "model": "softmax_regression", "img_size": 8, "batch_size": 4,
    "patience": 0, "warmup_epochs": 0, "augment": [],
}  # fmt: skip
# Everything a pipeline run writes, as dvc.yaml declares it (dvclive's curves excepted: dvclive resets them itself).
ARTIFACTS = (
    "data/folds.csv", "data/ingest_report.csv", "models/fold0.pt", "models/fold1.pt", "predictions/oof.csv",
    "metrics/train.json", "metrics/train_folds.json", "metrics/cv.json", "metrics/cv_folds.json", "plots/confusion.csv",
    "submissions/submission.csv",
    "predictions/test_probs.csv", "metrics/leaderboard.json",
)  # fmt: skip


def write_png(path: Path, label_index: int, rng: np.random.Generator, size: int = 12) -> None:
    """A colour image whose brightness tells its class."""
    image = np.full((size, size, 3), 40 + 70 * label_index, np.uint8) + rng.integers(0, 20, (size, size, 3), np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), image)


def write_competition(raw: Path, n_train: int = 12, n_test: int = 4) -> None:
    """Kaggle CIFAR-10's layout: train/<id>.png, trainLabels.csv (id,label), test/<id>.png, sampleSubmission.csv."""
    rng = np.random.default_rng(0)
    for i in range(1, n_train + 1):
        write_png(raw / "train" / f"{i}.png", i % 3, rng)
    labels = [CLASSES[i % 3] for i in range(1, n_train + 1)]
    pd.DataFrame({"id": range(1, n_train + 1), "label": labels}).to_csv(raw / "trainLabels.csv", index=False)
    for i in range(1, n_test + 1):
        write_png(raw / "test" / f"{i}.png", i % 3, rng)
    pd.DataFrame({"id": range(1, n_test + 1), "label": "cat"}).to_csv(raw / "sampleSubmission.csv", index=False)


def write_params(project: Path, **overrides: object) -> Path:
    """params.yaml with the tiny settings; `data=` merges into the data section."""
    params = {**TINY, "data": {"source": "local", "path": "unused"}}
    for key, value in overrides.items():
        params[key] = {**params["data"], **value} if key == "data" else value
    path = project / "params.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


def truncate(path: Path, keep: float = 0.6) -> None:
    """Cut a file short, as an interrupted download or copy does."""
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def snapshot(project: Path, names: tuple[str, ...] = ARTIFACTS) -> dict[str, str]:
    """sha256 of each artifact that exists."""
    return {name: sha256(project / name) for name in names if (project / name).exists()}


@contextlib.contextmanager
def inside(folder: Path) -> Iterator[None]:
    """Run with `folder` as the working directory, as DVC runs a stage in the repository root."""
    before = Path.cwd()
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(before)


def run_pipeline(project: Path) -> None:
    """split -> train -> evaluate -> predict in `project`, with its params.yaml."""
    paths = Paths(project)
    params = load_params(paths.params)
    for stage in (split, train, evaluate, predict):
        stage.run(params, paths)


def make_project(tmp_path: Path, **params: object) -> Path:
    project = tmp_path / "project"
    write_competition(project / "data/raw")
    write_params(project, **params)
    return project


def copy_project(project: Path, tmp_path: Path) -> Path:
    """A fresh copy of a project that already ran, so each test breaks its own."""
    copy = tmp_path / "copy"
    shutil.copytree(project, copy, ignore=shutil.ignore_patterns("cache"))
    return copy


def trained_project_fixtures() -> tuple[object, object]:
    """The fixtures `trained` (a project whose whole pipeline ran once, per test module) and `project`
    (a fresh copy of it per test, so each test breaks its own). Assign both at a test module's top."""

    @pytest.fixture(scope="module")
    def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
        project = make_project(tmp_path_factory.mktemp("trained"))
        run_pipeline(project)
        return project

    @pytest.fixture
    def project(trained: Path, tmp_path: Path) -> Path:
        return copy_project(trained, tmp_path)

    return trained, project


def run_main(module: object, project: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """A stage's `main()` in `project`: (exit status, stderr)."""
    capsys.readouterr()
    with inside(project), pytest.MonkeyPatch.context() as patch, pytest.raises(SystemExit) as stopped:
        patch.setattr(sys, "argv", [module.__name__])  # not pytest's arguments
        module.main()
    return stopped.value.code, capsys.readouterr().err


def run_stage_process(project: Path, stage: str) -> subprocess.CompletedProcess:
    """`python -m kagglecv.stages.<stage>` in `project`, as `dvc repro` runs it."""
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    return subprocess.run(
        [sys.executable, "-m", f"kagglecv.stages.{stage}"], cwd=project, env=env, capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip
