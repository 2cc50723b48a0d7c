"""Stage `train`: one model per fold, trained on the other folds, early-stopped on its own.

Reads params: the training knobs (`seed`, `seeds`, `soup`, `pseudo_label`, `model`, `pretrained`, `img_size`,
`epochs`, `lr`, …, `augment`, `augment_test`, `tta`, `devices`, `task`, `metric`, `data.layout`, `data.channels`);
files: `data/raw/`, `data/folds.csv`. Writes: `models/fold<k>.pt` (self-describing checkpoints, with the task),
`predictions/oof.csv` (out-of-fold probabilities per class, or per label of a multilabel task (a
sigmoid each), averaged over the `tta` views and the `seeds`), `dvclive/fold<k>/` (per-epoch
curves), `plots/augmented.png` (a training batch after augmentation), `metrics/train.json` (the
headline `dvc exp show` lists: `train.minutes`, and the epoch plan: `train.epochs` each fold could
train, `train.time_limit`, `train.cut`) and `metrics/train_folds.json` (per fold: epochs run, best
epoch, validation accuracy, seconds, images/s).

`seeds` trains each fold once per seed (`models/fold<k>-<r>.pt` beside `fold<k>.pt`) and averages
their out-of-fold probabilities; `soup` makes a fold's model the average of its best epochs' weights
(`kagglecv.engine.fit`); `pseudo_label` adds confidently predicted test images to every fold's
training part (`kagglecv.pseudo_labels`), listed in `predictions/pseudo_labels.csv`. With
`pseudo_label.source: first_round` every fold trains twice: once without them (its results stay in
the resume store; `train_folds.json` keeps their figures under `first_round`), then, after the test
images are labelled by those models, again with them: the files are the second round's.

With `time_limit` (minutes) set, one epoch of fold 0 is timed first and every fold gets the same
number of epochs that fits the budget (see `kagglecv.budget`).

An interrupted run resumes: see `kagglecv.resume`. With `parallel.folds` > 1, worker processes or
Ray tasks train the folds into the resume store first and this process gathers them (see
`kagglecv.parallel`). With `devices` > 1 the stage relaunches itself
under torchrun and trains data-parallel (see `kagglecv.distributed`). Outside DVC,
`python -m kagglecv.stages.train --folds 0,2` trains only those folds into the resume store and writes
no outputs, so folds can train on several machines (docs/training.md).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import logging
import math
import time
from pathlib import Path

import numpy as np
import pandas as pd

from dvclive import Live
from kagglecv import distributed, parallel
from kagglecv.artifacts import write_checkpoint, write_csv, write_json
from kagglecv.budget import EpochPlan, plan_epochs
from kagglecv.data import CompetitionError
from kagglecv.batch_transforms import build_batch_transforms
from kagglecv.engine import EpochLog, TrainingDiverged
from kagglecv.fold_training import FoldData, TrainSetup, check_names, make_setup, read_training_set, train_fold
from kagglecv.loaders import ImageDataset, resident
from kagglecv.models import ModelError
from kagglecv.params import FIRST_ROUND, Params, ParamsError, PseudoLabelParams, load_params, training_seeds
from kagglecv.paths import Paths
from kagglecv.pictures import write_image_grid
from kagglecv.progress import format_seconds
from kagglecv.pseudo_labels import (
    check_single_label,
    choose_pseudo_labels,
    predict_test_probs,
    select_confident,
    with_pseudo_labels,
)
from kagglecv.resume import ResumeStore, code_hashes, resume_key
from kagglecv.revisions import RevisionError
from kagglecv.runtime import WorkspaceBusy, main_of, use_deterministic_algorithms, workspace_lock
from kagglecv.tasks import Task
from kagglecv.transforms import TransformError, build_transforms, resolve_augment
from kagglecv.tta import TTAError

log = logging.getLogger("kagglecv.train")


def run(params: Params, paths: Paths = Paths(), *, only_folds: set[int] | None = None) -> dict:
    """Train every fold (resuming an interrupted run); return the summary written to `metrics/train.json`
    and, per fold, `metrics/train_folds.json`.

    `only_folds`: train just these into the resume store and write no outputs (several machines)."""
    started = time.perf_counter()  # the time budget counts from here
    check_names(params)  # before any data is read
    asked = params
    parallel.use_threads(params.parallel.threads)
    use_deterministic_algorithms(params.deterministic)
    params, competition, data = read_training_set(params, paths)
    classes, n_train = data.task.classes, len(data.images)
    setup = make_setup(params, data.images, len(classes))  # normalised by the training images' statistics
    n_folds = int(data.fold_of.max()) + 1
    _log_start(params, setup, data.images, len(classes), n_folds)
    only, first = only_folds, None
    if params.pseudo_label.source == FIRST_ROUND:  # round 1 trains every fold, for the ensemble's test predictions
        check_single_label(data.task)
        plain = lambda p: dataclasses.replace(p, pseudo_label=PseudoLabelParams())  # noqa: E731
        first = _train_round(plain(asked), plain(params), paths, data, setup, set(range(n_folds)), started=started,
                             rounds=2, outputs=False, workers=only is None)  # fmt: skip
        models = [state for states in first.states.values() for state in states]  # every fold's, every seed's
        probs = predict_test_probs(models, competition, params, data, setup)
        pseudo = select_confident(probs, competition.test_ids, classes, params.pseudo_label.threshold,
                                  source="the first round's test predictions")  # fmt: skip
    else:
        pseudo = choose_pseudo_labels(params, paths, competition, data.task)
    data = with_pseudo_labels(data, pseudo, competition, params)  # appended at fold -1: trained on, never validated
    if distributed.is_main() and only is None:
        write_augmented_grid(paths.augmented_plot, params, data, competition.train_labels)
    last = _train_round(asked, params, paths, data, setup, only or set(range(n_folds)), started=started, after=first,
                        outputs=only is None, workers=only is None)  # fmt: skip
    seconds = time.perf_counter() - started
    plan = last.plan
    headline = {"minutes": round(seconds / 60, 2), **plan.summary(), "img_size": params.img_size, "cache_size": params.cache_size}
    if params.pseudo_label.source:
        headline["pseudo_labels"] = len(pseudo)
    detail = {"seconds": round(seconds, 2), "epoch_seconds": plan.epoch_seconds, "folds": last.summary}
    if first is not None:
        detail["first_round"] = {"folds": first.summary}
    plan.warn_if_over(seconds)
    if only is not None:
        log.info("folds %s trained into %s; gather every fold's file there and run 'dvc repro'", sorted(only),
                 last.store.dir)  # fmt: skip
        return {**headline, **detail, "states": {fold: states[0] for fold, states in last.states.items()}}
    if distributed.is_main():
        n = n_train  # the pseudo-labelled test images after them have no out-of-fold row
        write_oof(paths.oof, last.oof[:n], classes, competition.train_ids, competition.train_labels, data.fold_of[:n])
        write_csv(paths.pseudo_labels, pseudo[["id", "label", "confidence"]])
        write_json(paths.train_metrics, {"train": headline})
        write_json(paths.train_folds_metrics, {"train": detail})
    distributed.barrier()  # every process is done with the resume state before it goes
    if distributed.is_main():
        for done in (first, last):
            if done is not None:
                done.store.clear()
    return {**headline, **detail}


@dataclasses.dataclass
class Round:
    """One training of the folds: out-of-fold probabilities (N, K), each fold's summary and finished states
    (one per seed), the epoch plan, the resume store and the ETA clock."""

    oof: np.ndarray
    summary: dict[str, dict]
    states: dict[int, list[dict]]
    plan: EpochPlan
    store: ResumeStore
    clock: EtaClock


def _train_round(
    asked: Params, params: Params, paths: Paths, data: FoldData, setup: TrainSetup, folds: set[int], *, started: float,
    rounds: int = 1, after: Round | None = None, outputs: bool, workers: bool,
) -> Round:  # fmt: skip
    """Train (or resume) `folds` on `data` with every seed; `after` the first round of two, with its epochs
    and clock. `outputs`: checkpoints and dvclive curves; `workers`: with `parallel.folds` > 1, hand them out first."""
    images = data.images
    spec = resolve_augment(params.augment, params.img_size)
    if params.loader != "dataloader" and build_batch_transforms(spec) is not None:  # the tensor path
        data = dataclasses.replace(data, train_images=resident(images, setup.precision.device))
    arrays = [a for a in (images, data.labels, data.fold_of, data.targets) if a is not None]
    key = resume_key(parallel.trained_params(params), *arrays)
    store = ResumeStore(key, paths.resume, code=code_hashes())  # an edit of the code trains a fold again
    n_folds = int(data.fold_of.max()) + 1
    seeds = training_seeds(params)
    runs = len(folds) * len(seeds)
    plan = after.plan if after else plan_epochs(params, data, setup, folds=runs * rounds, started=started, store=store)
    params = dataclasses.replace(params, epochs=plan.epochs)  # every fold alike, so the CV stays comparable
    clock = after.clock if after else EtaClock(runs * rounds, params.epochs)
    name = "" if after is None and rounds == 1 else f"round {2 if after else 1}/2 "
    if name:
        log.info("%s: the folds %s pseudo-labels", name.strip(), "with the" if after else "without")
    if workers:  # with parallel.folds > 1, workers train the folds into the store first
        task = functools.partial(train_in_worker, asked, dataclasses.replace(paths, root=paths.root.resolve()))
        parallel.train_folds(task, sorted(folds), params.parallel, store)
    oof = np.zeros((len(images), len(data.task.classes)), np.float32)
    summary, states = {}, {}
    for place, fold in enumerate(sorted(folds)):  # the clock counts the folds trained here (a worker's: one)
        results = [_train_seed(fold, run, seed, params, data, setup, store, paths, clock, n_folds, outputs=outputs,
                               slot=(runs if after else 0) + place * len(seeds) + run, round_name=name)
                   for run, seed in enumerate(seeds)]  # fmt: skip
        probs = [r["oof_probs"] for r in results]
        oof[data.fold_of == fold] = probs[0] if len(probs) == 1 else np.mean(probs, axis=0)  # seeds averaged
        summary[str(fold)] = _fold_summary(results[0])
        if len(results) > 1:
            summary[str(fold)]["seeds"] = {str(seed): _fold_summary(r) for seed, r in zip(seeds, results)}
        states[fold] = results
    return Round(oof, summary, states, plan, store, clock)


def _train_seed(
    fold: int, run: int, seed: int, params: Params, data: FoldData, setup: TrainSetup, store: ResumeStore, paths: Paths,
    clock: EtaClock, n_folds: int, *, outputs: bool = True, slot: int = 0, round_name: str = "",
) -> dict:  # fmt: skip
    """Fold `fold` trained with its `run`-th seed, `seed`; its checkpoint is `models/fold<k>.pt` (first seed) or
    `models/fold<k>-<run>.pt`, its curves `dvclive/` under the same name; without `outputs` (a fold trained
    for the resume store only: `--folds`, a worker), neither."""
    name = f"fold{fold}" if run == 0 else f"fold{fold}-{run}"
    params = dataclasses.replace(params, seed=seed)
    with _live(paths.live / name) if outputs else _NoLive() as live:
        on_epoch = _epoch_logger(live, fold, n_folds, params.epochs, clock, slot, round_name)
        result = train_fold(fold, params, data, setup, store, on_epoch=on_epoch, run=run)
    if outputs and distributed.is_main():
        write_checkpoint(paths.models / f"{name}.pt", _checkpoint(params, setup, data.task, data.images, fold, result))
    return result


def train_in_worker(params: Params, paths: Paths, fold: int) -> dict:
    """Train `fold` into the resume store, writing no outputs; its finished state (see `kagglecv.parallel`)."""
    return run(params, paths, only_folds={fold})["states"][fold]


def write_oof(
    path: Path, oof: np.ndarray, classes: list[str], ids: list[str], labels: list[str], fold_of: np.ndarray
) -> None:
    """id, label, fold and one probability column per class; fold -1 rows (train only) stay zero."""
    frame = pd.DataFrame(oof, columns=classes)
    frame.insert(0, "fold", fold_of)
    frame.insert(0, "label", labels)
    frame.insert(0, "id", ids)
    write_csv(path, frame, float_format="%.6g")


def _log_start(params: Params, setup: TrainSetup, images: np.ndarray, n_classes: int, n_folds: int) -> None:
    amp = f" with {setup.precision.amp_dtype} autocast" if setup.precision.amp_dtype else ""
    procs = f" x{distributed.world_size()} processes" if distributed.world_size() > 1 else ""
    cache = f", decoded at {params.cache_size}px" if params.cache_size != params.img_size else ""
    log.info(
        "%d images at img_size %d%s (%d channel(s)), %d classes, %d folds, model %s on %s%s%s", len(images),
        params.img_size, cache, images.shape[-1], n_classes, n_folds, params.model, setup.precision.device, amp, procs,
    )  # fmt: skip


def _fold_summary(result: dict) -> dict:
    history = result["history"]
    return {
        "best_epoch": result["best_epoch"] + 1, "epochs_run": len(history),
        "valid_accuracy": round(history[result["best_epoch"]]["valid_accuracy"], 6),
        "seconds": round(sum(e["seconds"] for e in history), 2),
        "images_per_s": round(float(np.median([e["images_per_s"] for e in history])), 1),
    }  # fmt: skip


def write_augmented_grid(path: Path, params: Params, data: FoldData, labels: list[str], n: int = 32) -> None:
    """The first training batch of fold 0, as the model sees it after augmentation (before mixup)."""
    spec = resolve_augment(params.augment, params.img_size)
    idx = np.flatnonzero(data.fold_of != 0)[:n]
    batch = ImageDataset(data.images, None, build_transforms(spec=spec, seed=params.seed), rows=idx, size=params.img_size)
    shown = np.stack([batch[i][0].numpy().transpose(1, 2, 0) for i in range(len(idx))])  # (C, H, W) -> (H, W, C)
    write_image_grid(path, shown, [labels[i] for i in idx])


def _checkpoint(params: Params, setup: TrainSetup, task: Task, images: np.ndarray, fold: int, result: dict) -> dict:
    history, classes = result["history"], task.classes
    return {
        "model": params.model, "num_classes": len(classes), "in_chans": images.shape[-1],
        "img_size": params.img_size, "cache_size": params.cache_size, "classes": classes, "mean": setup.mean, "std": setup.std,
        "task": task.kind, "metric": task.metric,
        "augment_test": params.augment_test, "fold": fold, "best_epoch": result["best_epoch"],
        "valid_accuracy": history[result["best_epoch"]]["valid_accuracy"], "ema": params.ema.enabled,
        "params": parallel.trained_params(params), "state_dict": result["best_state"],
    }  # fmt: skip


class _NoLive:
    def __enter__(self) -> _NoLive:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def log_metric(self, *args: object, **kwargs: object) -> None:
        return None

    def next_step(self) -> None:
        return None


def _live(path: Path) -> Live | _NoLive:
    """dvclive for this fold's curves; other processes than the first log nothing."""
    if not distributed.is_main():
        return _NoLive()
    return Live(dir=str(path), dvcyaml=None, save_dvc_exp=False, report=None)


class EtaClock:
    """The stage's ETA: the mean time of the epochs trained so far, times the epochs still to train.

    Epochs left are those of the current fold and of every later one: an upper bound, since early
    stopping may end a fold sooner, and exactly 0 once the last epoch is done."""

    def __init__(self, n_folds: int, epochs: int) -> None:
        self.n_folds, self.epochs = n_folds, epochs
        self.trained = 0
        self.seconds = 0.0

    def after(self, fold: int, epoch: int, seconds: float) -> float:
        """Seconds left after `epoch` (0-based) of `fold` took `seconds` (validation included)."""
        self.trained += 1
        self.seconds += seconds
        left = (self.epochs - epoch - 1) + (self.n_folds - fold - 1) * self.epochs
        return self.seconds / self.trained * left


def _epoch_logger(
    live: Live | _NoLive, fold: int, n_folds: int, epochs: int, clock: EtaClock, slot: int, round_name: str = ""
):  # fmt: skip
    """One log line per epoch (with an ETA for the whole stage; `slot`: the fold's place among every fold's seeds
    and rounds; `round_name`: the round, when there are two) and dvclive's curves."""
    last = [time.perf_counter()]

    def on_epoch(e: EpochLog, replayed: bool = False) -> None:
        for name, value in (
            ("train/loss", e.train_loss), ("train/accuracy", e.train_accuracy),
            ("valid/loss", e.valid_loss), ("valid/accuracy", e.valid_accuracy), ("lr", e.lr),
        ):  # fmt: skip
            live.log_metric(name, value, plot=True)
        if not math.isnan(e.valid_metric):
            live.log_metric("valid/metric", e.valid_metric, plot=True)
        live.next_step()
        now = time.perf_counter()
        took, last[0] = now - last[0], now
        if replayed or not distributed.is_main():
            return
        left = clock.after(slot, e.epoch, took)
        log.info(
            "%sfold %d/%d epoch %2d/%d  train %.4f %.4f  valid %.4f %.4f%s%s  %.1fs %.0f img/s  eta %s",
            round_name, fold + 1, n_folds, e.epoch + 1, epochs, e.train_loss, e.train_accuracy, e.valid_loss, e.valid_accuracy,
            "" if math.isnan(e.valid_metric) else f" metric {e.valid_metric:.4f}", " *" if e.improved else "  ",
            e.seconds, e.images_per_s,
            f"at most {format_seconds(left)}" if left > 0 else "0s (last epoch)",
        )  # fmt: skip

    return on_epoch


def _only_folds() -> set[int] | None:
    parser = argparse.ArgumentParser(prog="python -m kagglecv.stages.train", description=__doc__.splitlines()[0])
    parser.add_argument("--folds", help="comma-separated folds to train into the resume store only (several machines)")
    value = parser.parse_args().folds
    return {int(v) for v in value.split(",")} if value else None


def _run_locked(paths: Paths = Paths()) -> None:
    """The stage in this workspace, alone: a second trainer would overwrite the first's files (`--folds`
    runs, which write only their own folds' state, may run side by side). The processes torchrun starts
    run under their launcher's lock."""
    only = _only_folds()
    lock = workspace_lock(paths.train_lock, "the train stage", shared=only is not None)
    with contextlib.nullcontext() if distributed.under_torchrun() else lock:
        params = load_params(paths.params)
        distributed.launch_or_run(lambda: run(params, paths, only_folds=only), params.devices)


main = main_of(
    _run_locked, ParamsError, CompetitionError, ModelError, TransformError, TTAError, TrainingDiverged,
    distributed.DevicesError, WorkspaceBusy, RevisionError, parallel.WorkerError,
)  # fmt: skip

if __name__ == "__main__":
    main()
