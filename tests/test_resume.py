"""An interrupted train stage resumes where it stopped and ends exactly as an uninterrupted run."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import pytest
import torch

from kagglecv.params import EmaParams, MixupParams
from kagglecv.paths import Paths
from kagglecv.resume import resume_key
from kagglecv.stages import split, train
from tests.conftest import shipped, with_raw

# Everything with state across epochs is on: dropout (kcv_cnn), mixup (NumPy's generator), EMA,
# the cosine schedule, early stopping, and TTA for the out-of-fold probabilities.
PARAMS = shipped(
    n_folds=2, epochs=3, img_size=8, batch_size=32, patience=5, warmup_epochs=1,
    mixup=MixupParams(mixup_alpha=0.2), ema=EmaParams(enabled=True, decay=0.9), tta=["hflip"],
)  # fmt: skip


def interrupt_after(monkeypatch: pytest.MonkeyPatch, fold: int, epochs: int) -> None:
    """Raise KeyboardInterrupt, as Ctrl-C would, once `fold` has finished `epochs` epochs (and saved them)."""
    make_logger = train._epoch_logger

    def logger(live, at_fold, *args):
        log_epoch = make_logger(live, at_fold, *args)

        def on_epoch(entry, replayed=False):
            log_epoch(entry, replayed)
            if not replayed and (at_fold, entry.epoch + 1) == (fold, epochs):
                raise KeyboardInterrupt(f"after fold {fold} epoch {epochs}")

        return on_epoch

    monkeypatch.setattr(train, "_epoch_logger", logger)


def _train(raw: Path, root: Path, params=PARAMS) -> tuple[Paths, dict]:
    paths = with_raw(Paths(root), raw)
    split.run(params, paths)
    return paths, train.run(params, paths)


@pytest.mark.slow
def test_rerun_after_an_interruption_matches_an_uninterrupted_run(digits_raw, tmp_path, monkeypatch, caplog):
    whole_paths, whole = _train(digits_raw, tmp_path / "whole")

    out = Paths(tmp_path / "interrupted")
    with monkeypatch.context() as patch:
        interrupt_after(patch, fold=0, epochs=2)
        with pytest.raises(KeyboardInterrupt):
            _train(digits_raw, out.root)
    (saved,) = list(out.resume.glob("*/fold0.pt"))
    assert torch.load(saved, weights_only=False)["epochs_done"] == 2

    with caplog.at_level(logging.INFO, logger="kagglecv.train"):
        resumed = train.run(PARAMS, out)
    assert "fold 0: resuming after epoch 2 of an interrupted run" in caplog.text
    assert not out.resume.exists()  # cleared once the stage completed

    assert out.oof.read_bytes() == whole_paths.oof.read_bytes()
    for fold in (0, 1):
        a = torch.load(whole_paths.models / f"fold{fold}.pt", weights_only=False)
        b = torch.load(out.models / f"fold{fold}.pt", weights_only=False)
        assert a["best_epoch"] == b["best_epoch"] and a["valid_accuracy"] == b["valid_accuracy"]
        for key in a["state_dict"]:
            assert torch.equal(a["state_dict"][key], b["state_dict"][key]), key
    for fold in ("0", "1"):
        assert whole["folds"][fold]["valid_accuracy"] == resumed["folds"][fold]["valid_accuracy"]
    curve = (out.live / "fold0" / "plots" / "metrics" / "valid" / "loss.tsv").read_text().splitlines()
    assert len(curve) == 1 + 3  # header and every epoch, the two before the interruption included


def test_finished_folds_are_skipped(digits_paths, monkeypatch, caplog):
    params = dataclasses.replace(PARAMS, epochs=1, model="softmax_regression", mixup=MixupParams(), tta=[])
    split.run(params, digits_paths)
    with monkeypatch.context() as patch:
        interrupt_after(patch, fold=1, epochs=1)
        with pytest.raises(KeyboardInterrupt):
            train.run(params, digits_paths)
    with caplog.at_level(logging.INFO, logger="kagglecv.train"):
        train.run(params, digits_paths)
    assert "fold 0: finished by an earlier, interrupted run; reusing its results" in caplog.text
    assert "fold 1: resuming after epoch 1" in caplog.text


def test_a_change_of_params_or_data_starts_fresh():
    import numpy as np

    images, labels = np.zeros((4, 2, 2, 1), np.uint8), np.array([0, 1, 0, 1])
    key = resume_key(dataclasses.asdict(PARAMS), images, labels)
    assert key == resume_key(dataclasses.asdict(PARAMS), images.copy(), labels.copy())
    assert key != resume_key(dataclasses.asdict(dataclasses.replace(PARAMS, lr=0.01)), images, labels)
    assert key != resume_key(dataclasses.asdict(PARAMS), images, labels[::-1].copy())


def test_folds_trained_separately_are_gathered(digits_paths, caplog):
    params = dataclasses.replace(PARAMS, epochs=1, model="softmax_regression", mixup=MixupParams(), tta=[])
    split.run(params, digits_paths)
    assert set(train.run(params, digits_paths, only_folds={1})["folds"]) == {"1"}  # as on another machine
    assert not digits_paths.oof.exists()
    with caplog.at_level(logging.INFO, logger="kagglecv.train"):
        assert set(train.run(params, digits_paths)["folds"]) == {"0", "1"}
    assert "fold 1: finished by an earlier, interrupted run; reusing its results" in caplog.text
    assert digits_paths.oof.exists()


def test_the_eta_of_a_subset_of_folds_counts_those_folds(digits_paths, caplog):
    """A worker or `--folds 1` trains fold 1 alone: its first epoch still has one epoch to go."""
    params = dataclasses.replace(PARAMS, epochs=2, model="softmax_regression", mixup=MixupParams(), tta=[])
    split.run(params, digits_paths)
    with caplog.at_level(logging.INFO, logger="kagglecv.train"):
        train.run(params, digits_paths, only_folds={1})
    lines = [r.getMessage() for r in caplog.records if "fold 2/2 epoch" in r.getMessage()]
    assert len(lines) == 2
    assert "eta at most" in lines[0] and lines[1].endswith("eta 0s (last epoch)")
