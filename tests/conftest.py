"""Shared fixtures: tiny competitions and params built in tmp_path, CPU only, no network."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from kagglecv.params import Params
from kagglecv.sources import write_digits

REPO = Path(__file__).resolve().parents[1]

torch.set_num_threads(2)


@pytest.fixture(scope="session")
def digits_raw(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The embedded digits competition, written once per test session."""
    root = tmp_path_factory.mktemp("digits") / "raw"
    write_digits(root, test_fraction=0.2)
    return root


@pytest.fixture
def tiny_params() -> Params:
    """Params for a fast run: 2 folds, 2 epochs, 8x8 images."""
    return dataclasses.replace(Params(), n_folds=2, epochs=2, img_size=8, batch_size=32, patience=1, warmup_epochs=0)
