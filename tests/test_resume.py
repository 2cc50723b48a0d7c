"""An interrupted train stage resumes where it stopped and ends exactly as an uninterrupted run."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import pytest
import torch

from kagglecv.params import EmaParams, MixupParams, Params
from kagglecv.resume import resume_key
from kagglecv.stages import split, train

# Everything with state across epochs is on: dropout (kcv_cnn), mixup (NumPy's generator), EMA,
# the cosine schedule, early stopping, and TTA for the out-of-fold probabilities.
PARAMS = dataclasses.replace(
    Params(), n_folds=2, epochs=3, img_size=8, batch_size=32, patience=5, warmup_epochs=1,
    mixup=MixupParams(mixup_alpha=0.2), ema=EmaParams(enabled=True, decay=0.9), tta=["hflip"],
)  # fmt: skip


def _train(raw: Path, out: Path, resume_root: Path) -> dict:
    split.run(PARAMS, raw_dir=raw, out_path=out / "folds.csv")
    return train.run(
        PARAMS, raw_dir=raw, folds_path=out / "folds.csv", models_dir=out / "models", oof_path=out / "oof.csv",
        live_dir=out / "dvclive", metrics_path=out / "train.json", augmented_path=out / "augmented.png",
        resume_dir=resume_root,
    )  # fmt: skip


@pytest.mark.slow
def test_rerun_after_an_interruption_matches_an_uninterrupted_run(digits_raw, tmp_path, monkeypatch, caplog):
    whole = _train(digits_raw, tmp_path / "whole", tmp_path / "resume_whole")

    out, resume_root = tmp_path / "interrupted", tmp_path / "resume"
    monkeypatch.setenv(train.STOP_AFTER_ENV, "0:2")  # as if Ctrl-C came after fold 0's second epoch
    with pytest.raises(KeyboardInterrupt):
        _train(digits_raw, out, resume_root)
    (saved,) = list(resume_root.glob("*/fold0.pt"))
    assert torch.load(saved, weights_only=False)["epochs_done"] == 2

    monkeypatch.delenv(train.STOP_AFTER_ENV)
    with caplog.at_level(logging.INFO, logger="kagglecv.train"):
        resumed = _train(digits_raw, out, resume_root)
    assert "fold 0: resuming after epoch 2 of an interrupted run" in caplog.text
    assert not resume_root.exists()  # cleared once the stage completed

    assert (out / "oof.csv").read_bytes() == (tmp_path / "whole" / "oof.csv").read_bytes()
    for fold in (0, 1):
        a = torch.load(tmp_path / "whole" / "models" / f"fold{fold}.pt", weights_only=False)
        b = torch.load(out / "models" / f"fold{fold}.pt", weights_only=False)
        assert a["best_epoch"] == b["best_epoch"] and a["valid_accuracy"] == b["valid_accuracy"]
        for key in a["state_dict"]:
            assert torch.equal(a["state_dict"][key], b["state_dict"][key]), key
    for fold in ("0", "1"):
        assert whole["folds"][fold]["valid_accuracy"] == resumed["folds"][fold]["valid_accuracy"]
    curve = (out / "dvclive" / "fold0" / "plots" / "metrics" / "valid" / "loss.tsv").read_text().splitlines()
    assert len(curve) == 1 + 3  # header and every epoch, the two before the interruption included


def test_finished_folds_are_skipped(digits_raw, tmp_path, monkeypatch, caplog):
    params = dataclasses.replace(PARAMS, epochs=1, model="softmax_regression", mixup=MixupParams(), tta=[])
    out = tmp_path / "run"
    split.run(params, raw_dir=digits_raw, out_path=out / "folds.csv")
    monkeypatch.setenv(train.STOP_AFTER_ENV, "1:1")
    kwargs = dict(raw_dir=digits_raw, folds_path=out / "folds.csv", models_dir=out / "models", oof_path=out / "oof.csv",
                  live_dir=out / "dvclive", metrics_path=out / "train.json", augmented_path=out / "augmented.png",
                  resume_dir=tmp_path / "resume")  # fmt: skip
    with pytest.raises(KeyboardInterrupt):
        train.run(params, **kwargs)
    monkeypatch.delenv(train.STOP_AFTER_ENV)
    with caplog.at_level(logging.INFO, logger="kagglecv.train"):
        train.run(params, **kwargs)
    assert "fold 0: finished by an earlier, interrupted run; reusing its results" in caplog.text
    assert "fold 1: resuming after epoch 1" in caplog.text


def test_a_change_of_params_or_data_starts_fresh():
    import numpy as np

    images, labels = np.zeros((4, 2, 2, 1), np.uint8), np.array([0, 1, 0, 1])
    key = resume_key(dataclasses.asdict(PARAMS), images, labels)
    assert key == resume_key(dataclasses.asdict(PARAMS), images.copy(), labels.copy())
    assert key != resume_key(dataclasses.asdict(dataclasses.replace(PARAMS, lr=0.01)), images, labels)
    assert key != resume_key(dataclasses.asdict(PARAMS), images, labels[::-1].copy())


def test_folds_trained_separately_are_gathered(digits_raw, tmp_path, monkeypatch, caplog):
    params = dataclasses.replace(PARAMS, epochs=1, model="softmax_regression", mixup=MixupParams(), tta=[])
    out = tmp_path / "run"
    split.run(params, raw_dir=digits_raw, out_path=out / "folds.csv")
    kwargs = dict(raw_dir=digits_raw, folds_path=out / "folds.csv", models_dir=out / "models", oof_path=out / "oof.csv",
                  live_dir=out / "dvclive", metrics_path=out / "train.json", augmented_path=out / "augmented.png",
                  resume_dir=tmp_path / "resume")  # fmt: skip
    monkeypatch.setenv(train.ONLY_FOLDS_ENV, "1")  # as on another machine
    assert set(train.run(params, **kwargs)["folds"]) == {"1"}
    assert not (out / "oof.csv").exists()
    monkeypatch.delenv(train.ONLY_FOLDS_ENV)
    with caplog.at_level(logging.INFO, logger="kagglecv.train"):
        assert set(train.run(params, **kwargs)["folds"]) == {"0", "1"}
    assert "fold 1: finished by an earlier, interrupted run; reusing its results" in caplog.text
    assert (out / "oof.csv").exists()
