"""Fitting the train stage into `time_limit` minutes: one number of epochs for every fold.

With `time_limit` > 0 the train stage first times one epoch of fold 0 (training and validation,
on a model thrown away afterwards), then gives every fold the most epochs, up to `epochs`, that
fit in what is left of the budget. Each fold's schedule then runs its whole course in those
epochs and every fold is trained alike, so the CV stays comparable; early stopping may still end
a fold sooner. The plan is kept beside the resume state, so a resumed run keeps it. It is an
estimate from one epoch: the stage warns when it ran over.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from kagglecv import distributed
from kagglecv.artifacts import write_json
from kagglecv.fold_training import FoldData, TrainSetup, train_fold
from kagglecv.params import Params
from kagglecv.resume import ResumeStore

log = logging.getLogger("kagglecv.train")

BUDGET_SHARE = 0.95  # plan to use 95% of the budget; the rest absorbs checkpoint writes and timing noise
PLAN_FILE = "plan.json"  # in the resume store's folder


@dataclass(frozen=True)
class EpochPlan:
    epochs: int  # each fold trains at most this many epochs
    time_limit: float = 0.0  # minutes; 0: no limit
    cut: bool = False  # `epochs` is below params.epochs because of the limit
    epoch_seconds: float | None = None  # the timed epoch of fold 0 (training and validation), when limited

    def summary(self) -> dict:
        """What `metrics/train.json` records of the plan."""
        return {"epochs": self.epochs, "time_limit": self.time_limit, "cut": self.cut}

    def warn_if_over(self, seconds: float) -> None:
        if self.time_limit and seconds > self.time_limit * 60:
            log.warning("the train stage took %.1f min, over time_limit %g; the plan came from one epoch of fold 0 "
                        "that took %.1f s", seconds / 60, self.time_limit, self.epoch_seconds)  # fmt: skip


def fit_epochs(*, epochs: int, folds: int, time_limit: float, elapsed: float, epoch_seconds: float) -> int:
    """The most epochs per fold, from 1 to `epochs`, for `folds` folds of `epoch_seconds` per epoch to
    fit in `time_limit` minutes, `elapsed` seconds of which are gone."""
    left = time_limit * 60 * BUDGET_SHARE - elapsed
    return max(1, min(epochs, int(left // (folds * epoch_seconds))))


def time_epoch(params: Params, data: FoldData, setup: TrainSetup) -> float:
    """Seconds of one epoch of fold 0, training and validation, on a model and resume state thrown away."""
    with tempfile.TemporaryDirectory() as tmp:
        begun = time.perf_counter()
        train_fold(0, dataclasses.replace(params, epochs=1), data, setup, ResumeStore("timing", Path(tmp)),
                   on_epoch=lambda *args, **kwargs: None)  # fmt: skip
        return time.perf_counter() - begun


def plan_epochs(
    params: Params, data: FoldData, setup: TrainSetup, *, folds: int, started: float, store: ResumeStore
) -> EpochPlan:
    """The epochs every one of `folds` folds gets within `params.time_limit`, counted from `started`
    (a `time.perf_counter()`); `params.epochs` when there is no limit."""
    if params.time_limit <= 0:
        return EpochPlan(params.epochs)
    saved = store.dir / PLAN_FILE
    if saved.exists():
        plan = EpochPlan(**json.loads(saved.read_text()))
        log.info("time_limit %g min: %d epochs per fold, the interrupted run's plan", plan.time_limit, plan.epochs)
        return plan
    seconds = distributed.max_over_processes(time_epoch(params, data, setup))  # one plan for every process
    elapsed = time.perf_counter() - started
    epochs = fit_epochs(epochs=params.epochs, folds=folds, time_limit=params.time_limit, elapsed=elapsed,
                        epoch_seconds=seconds)  # fmt: skip
    plan = EpochPlan(epochs, params.time_limit, epochs < params.epochs, round(seconds, 3))
    needed = elapsed + folds * seconds  # the time so far, and one epoch per fold
    if needed > params.time_limit * 60:
        log.warning("time_limit %g min is too short: one epoch of fold 0 took %.1f s, so one per fold needs about "
                    "%.1f min; training 1 epoch per fold", params.time_limit, seconds, needed / 60)  # fmt: skip
    else:
        cut = f" (epochs {params.epochs} cut to {epochs})" if plan.cut else ""
        log.info("time_limit %g min: one epoch of fold 0 took %.1f s; %d folds x %d epochs fit%s",
                 params.time_limit, seconds, folds, epochs, cut)  # fmt: skip
    if distributed.is_main():
        write_json(saved, dataclasses.asdict(plan))
    return plan
