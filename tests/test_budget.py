"""time_limit: every fold gets the same epochs, planned from one timed epoch to fit the budget; train.json says so."""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import pandas as pd
import pytest
import torch

from kagglecv import budget
from kagglecv.budget import EpochPlan, fit_epochs, plan_epochs
from kagglecv.optim import MIN_LR_RATIO
from kagglecv.params import Params, ParamsError, load_params
from kagglecv.paths import Paths
from kagglecv.resume import ResumeStore
from kagglecv.stages import split, train
from tests.conftest import REPO, shipped, with_raw

# Fast, and no early stopping, so each fold trains every epoch it is given.
PARAMS = shipped(
    n_folds=2, epochs=5, model="softmax_regression", img_size=8, batch_size=64, augment=[], warmup_epochs=0, patience=10
)  # fmt: skip


def train_tiny(raw: Path, root: Path, params: Params) -> dict:
    paths = with_raw(Paths(root), raw)
    split.run(params, paths)
    return train.run(params, paths)


@pytest.mark.parametrize(
    ("epochs", "folds", "time_limit", "elapsed", "epoch_seconds", "expected"),
    [
        (20, 5, 10.0, 30.0, 6.0, 18),  # (570 s - 30 s) / (5 folds x 6 s) = 18
        (10, 5, 10.0, 30.0, 6.0, 10),  # never more than asked for
        (20, 5, 1.0, 30.0, 6.0, 1),  # too short for even one epoch each: one
        (20, 1, 60.0, 0.0, 3600.0, 1),
    ],
)
def test_fit_epochs_uses_95_percent_of_what_the_budget_leaves(
    epochs: int, folds: int, time_limit: float, elapsed: float, epoch_seconds: float, expected: int
) -> None:
    kwargs = {"time_limit": time_limit, "elapsed": elapsed, "epoch_seconds": epoch_seconds}
    assert fit_epochs(epochs=epochs, folds=folds, **kwargs) == expected


def test_time_limit_is_a_top_level_param_off_by_default(tmp_path: Path) -> None:
    assert load_params(REPO / "params.yaml").time_limit == 0.0
    assert any(line.startswith("time_limit: 0.0") for line in (REPO / "params.yaml").read_text().splitlines())
    path = tmp_path / "params.yaml"
    path.write_text("time_limit: 120\n")
    assert load_params(path).time_limit == 120.0
    path.write_text("time_limit: -1\n")
    with pytest.raises(ParamsError, match="time_limit: -1.0 is too small; it must be at least 0.0"):
        load_params(path)


def test_a_binding_limit_cuts_every_fold_to_the_same_epochs_and_the_schedule_still_ends(
    digits_raw, tmp_path, monkeypatch, caplog
) -> None:
    """One epoch 'takes' 30 s: 2.6316 min leave 150 s - a little, so 2 epochs for each of 2 folds, not 5."""
    monkeypatch.setattr(budget, "time_epoch", lambda *args: 30.0)
    params = dataclasses.replace(PARAMS, time_limit=2.6316)
    with caplog.at_level(logging.INFO, logger="kagglecv.train"):
        summary = train_tiny(digits_raw, tmp_path, params)
    planned = "time_limit 2.6316 min: one epoch of fold 0 took 30.0 s; 2 folds x 2 epochs fit (epochs 5 cut to 2)"
    assert planned in caplog.text
    headline = json.loads((Paths(tmp_path).train_metrics).read_text())["train"]
    assert {k: headline[k] for k in ("epochs", "time_limit", "cut")} == {"epochs": 2, "time_limit": 2.6316, "cut": True}
    detail = json.loads((Paths(tmp_path).train_folds_metrics).read_text())["train"]
    assert detail["epoch_seconds"] == 30.0
    assert [fold["epochs_run"] for fold in detail["folds"].values()] == [2, 2]
    assert detail["folds"] == summary["folds"]
    for fold in (0, 1):
        lr = pd.read_csv(tmp_path / f"dvclive/fold{fold}/plots/metrics/lr.tsv", sep="\t")["lr"]
        assert len(lr) == 2 and lr.iloc[-1] == pytest.approx(params.lr * MIN_LR_RATIO)  # the cosine ran its course
        assert torch.load(tmp_path / f"models/fold{fold}.pt", weights_only=False)["params"]["epochs"] == 2
    assert not Paths(tmp_path).resume.exists()  # the plan went with the resume state


def test_without_a_limit_nothing_is_timed_and_every_epoch_is_trained(digits_raw, tmp_path, monkeypatch) -> None:
    def never(*args: object) -> float:
        raise AssertionError("time_limit 0 must not time an epoch")

    monkeypatch.setattr(budget, "time_epoch", never)
    train_tiny(digits_raw, tmp_path, dataclasses.replace(PARAMS, epochs=2))
    headline = json.loads((Paths(tmp_path).train_metrics).read_text())["train"]
    assert {k: headline[k] for k in ("epochs", "time_limit", "cut")} == {"epochs": 2, "time_limit": 0.0, "cut": False}


def test_a_generous_limit_times_one_real_epoch_and_changes_nothing_else(digits_raw, tmp_path) -> None:
    params = dataclasses.replace(PARAMS, epochs=2)
    train_tiny(digits_raw, tmp_path / "free", params)
    train_tiny(digits_raw, tmp_path / "limited", dataclasses.replace(params, time_limit=60.0))
    assert Paths(tmp_path / "limited").oof.read_bytes() == Paths(tmp_path / "free").oof.read_bytes()
    limited = json.loads((Paths(tmp_path / "limited").train_metrics).read_text())["train"]
    assert (limited["epochs"], limited["cut"]) == (2, False)
    assert json.loads((Paths(tmp_path / "limited").train_folds_metrics).read_text())["train"]["epoch_seconds"] > 0


def test_a_budget_too_short_for_one_epoch_each_trains_one_and_warns(digits_raw, tmp_path, caplog) -> None:
    with caplog.at_level(logging.INFO, logger="kagglecv.train"):
        train_tiny(digits_raw, tmp_path, dataclasses.replace(PARAMS, time_limit=0.001))
    assert "time_limit 0.001 min is too short" in caplog.text and "training 1 epoch per fold" in caplog.text
    headline = json.loads((Paths(tmp_path).train_metrics).read_text())["train"]
    assert (headline["epochs"], headline["cut"]) == (1, True)


def test_a_resumed_run_keeps_the_interrupted_runs_plan(tmp_path, monkeypatch) -> None:
    store = ResumeStore("key", tmp_path)
    store.dir.mkdir(parents=True)
    saved = EpochPlan(epochs=3, time_limit=10.0, cut=True, epoch_seconds=12.5)
    (store.dir / budget.PLAN_FILE).write_text(json.dumps(dataclasses.asdict(saved)))
    monkeypatch.setattr(budget, "time_epoch", lambda *args: pytest.fail("a saved plan must not be timed again"))
    params = dataclasses.replace(PARAMS, time_limit=10.0)
    assert plan_epochs(params, None, None, folds=2, started=0.0, store=store) == saved
