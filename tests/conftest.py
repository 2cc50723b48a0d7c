"""Shared fixtures: tiny competitions and params built in tmp_path, CPU only, no network."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import pytest
import torch

from kagglecv.params import DataParams, Params, load_params
from kagglecv.paths import Paths
from kagglecv.sources import write_digits
from kagglecv.workspace import copy_project

REPO = Path(__file__).resolve().parents[1]
SHIPPED = load_params(REPO / "params.yaml")  # the recipe params.yaml ships: tests change only what they must

torch.set_num_threads(2)


@pytest.fixture(scope="session")
def digits_raw(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The embedded digits competition, written once per test session."""
    root = tmp_path_factory.mktemp("digits") / "raw"
    write_digits(root, test_fraction=0.2)
    return root


def shipped(**changes: object) -> Params:
    """params.yaml as shipped, with `changes`."""
    return dataclasses.replace(SHIPPED, **changes)


@pytest.fixture
def digits_paths(tmp_path: Path, digits_raw: Path) -> Paths:
    """A project layout in tmp_path whose data/raw/ holds the digits competition."""
    return with_raw(Paths(tmp_path), digits_raw)


def with_raw(paths: Paths, raw: Path) -> Paths:
    """`paths`, with a copy of the competition at `raw` as its data/raw/."""
    shutil.copytree(raw, paths.raw)
    return paths


@pytest.fixture(name="tiny_params")
def tiny_params_fixture() -> Params:
    """Params for a fast run: 2 folds, 2 epochs, 8x8 images."""
    return shipped(n_folds=2, epochs=2, img_size=8, batch_size=32, patience=1, warmup_epochs=0)


def tiny_params(**data: object) -> Params:
    """The smallest real run: 2 folds, 1 epoch, softmax regression on 8x8 images, `data` as given."""
    return shipped(n_folds=2, epochs=1, model="softmax_regression", img_size=8, batch_size=4, augment=[],
                   data=DataParams(**data))  # fmt: skip


def run_pipeline(params: Params, paths: Paths) -> Path:
    """download -> split -> train -> evaluate -> predict under `paths`; the submission's path."""
    from kagglecv.stages import download, evaluate, predict, split, train

    for stage in (download, split, train, evaluate, predict):
        stage.run(params, paths)
    return paths.submission


def make_project(root: Path, overrides: dict) -> Path:
    """A git repository at `root` holding this project's pipeline, with `overrides` in params.yaml."""
    root.mkdir(parents=True, exist_ok=True)
    copy_project(REPO, root, overrides)
    return root
