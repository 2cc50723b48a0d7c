"""Training one cross-validation fold from params: model, batches, `fit`, resume and TTA.

The train stage checks the names params give (`check_names`), builds one `TrainSetup` (`make_setup`)
and calls `train_fold` once per fold. A fold finished by an interrupted run is read back from the
resume store; an unfinished one continues from its last completed epoch.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import albumentations as A
import numpy as np
import torch

from kagglecv import distributed
from kagglecv.data import Competition, CompetitionError, read_folds
from kagglecv.engine import EpochLog, Precision, build_trainer, fit, fit_config, predict_probs, select_precision
from kagglecv.images import channel_stats, with_sizes
from kagglecv.ingest import read_competition
from kagglecv.loaders import eval_batches, train_batches
from kagglecv.losses import inverse_frequency
from kagglecv.metrics import get_metric, score_probs, tune_thresholds
from kagglecv.models import build_model, model_stats, unknown_model
from kagglecv.params import Params, ParamsError
from kagglecv.paths import Paths
from kagglecv.progress import Tracked
from kagglecv.resume import ResumeStore
from kagglecv.runtime import seed_everything, trim_heap
from kagglecv.tasks import Task, encode_labels, task_of
from kagglecv.transforms import build_transforms, resolve_augment, spec_problems
from kagglecv.tta import IDENTITY, parse_views

log = logging.getLogger("kagglecv.train")


@dataclass(frozen=True)
class FoldData:
    images: np.ndarray  # uint8 (N, S, S, C) at the cache side S, usually memory-mapped: never copied whole
    labels: np.ndarray  # int (N,) class indices, or float32 (N, K) 0/1 rows for a multilabel task
    fold_of: np.ndarray  # int (N,): each image's validation fold
    task: Task  # what the labels mean, and the metric the folds are scored by
    train_images: np.ndarray | torch.Tensor | None = None  # what the tensor path gathers from (None: `images`)
    targets: np.ndarray | None = None  # float32 (N, K) what training batches carry instead of `labels` (soft pseudo-labels)


@dataclass(frozen=True)
class TrainSetup:
    precision: Precision
    mean: list[float]  # per channel, [0, 1] units
    std: list[float]
    test_transform: A.Compose
    views: list[str]  # TTA views, identity first


def check_names(params: Params) -> None:
    """The names only timm and albumentations know: `model` in timm's registry, every `augment` and
    `augment_test` entry a transform with those arguments. Raises `ParamsError` listing every problem."""
    problems = [unknown_model(params.model)]
    for key in ("augment", "augment_test"):
        spec = getattr(params, key)
        problems += spec_problems(spec, key) if isinstance(spec, list) else []  # "auto" is ours, and valid
    problems = [p for p in problems if p]
    if problems:
        raise ParamsError(f"params.yaml has {len(problems)} problem(s):\n" + "\n".join(f"  - {p}" for p in problems))


def read_training_set(params: Params, paths: Paths) -> tuple[Params, Competition, FoldData]:
    """The training images (at the cache side, memory-mapped), their class indices and the folds of
    `paths.folds`, which must list the competition's training ids; and `params` with `img_size` and
    `cache_size` resolved from the images and `monitor` from the task (`resolve_monitor`)."""
    competition = read_competition(paths.raw, params.data.layout, labels_file=params.data.labels_file,
                                   max_megapixels=params.data.max_megapixels)  # fmt: skip
    folds = read_folds(paths.folds)
    if folds["id"].tolist() != competition.train_ids:
        raise CompetitionError(f"{paths.folds} does not match {paths.raw}: run 'dvc repro split' again")
    task = task_of(params, competition)
    check_task_params(params, task)
    labels = encode_labels(task, competition.train_labels)
    params = dataclasses.replace(with_sizes(params, competition.train_images), monitor=resolve_monitor(params.monitor, task))
    images = competition.train_images.load(img_size=params.cache_size, channels=params.data.channels)
    return params, competition, FoldData(images, labels, folds["fold"].to_numpy(), task)


def resolve_monitor(monitor: str, task: Task) -> str:
    """What early stopping watches: the validation loss for the metrics it tracks (accuracy, log loss) and
    for a lower-is-better one; otherwise (`auto`, `metric`) the competition's metric, its thresholds tuned on
    the held-out fold each epoch (a threshold of 0.5 scores F2 0 while every label is still below it)."""
    if monitor not in ("auto", "metric"):
        return monitor
    tracked_by_loss = task.metric in ("accuracy", "log_loss") and monitor == "auto"
    return "valid_loss" if tracked_by_loss or not get_metric(task.metric).higher_is_better else "metric"


def check_task_params(params: Params, task: Task) -> None:
    """The training options a multilabel task (a sigmoid per label) cannot use."""
    if not task.multilabel:
        return
    problems = [
        f"{key}: {value!r} is for single-label tasks; {fix} for this multilabel one"
        for key, value, off, fix in (
            ("mixup", "on", not params.mixup.enabled, "set both mixup alphas to 0.0"),
            ("class_balance", params.class_balance, params.class_balance == "none", "set class_balance: none"),
            ("loss", params.loss, params.loss != "mse", "use cross_entropy (binary) or focal"),
        )
        if not off
    ]  # fmt: skip
    if problems:
        raise ParamsError(f"params.yaml has {len(problems)} problem(s):\n" + "\n".join(f"  - {p}" for p in problems))


def make_setup(params: Params, images: np.ndarray, num_classes: int) -> TrainSetup:
    """What every fold shares: precision, normalisation, test-time pipeline and views (`params` with sizes resolved)."""
    device = distributed.device_for(params.devices)
    precision = select_precision(params.amp, device, channels_last=params.channels_last)
    stats = channel_stats(images)
    if params.normalize == "model" or (params.normalize == "auto" and params.pretrained):
        probe = build_model(name=params.model, num_classes=num_classes, in_chans=images.shape[-1], img_size=params.img_size)
        stats = model_stats(probe, images.shape[-1]) or stats
    test_transform = build_transforms(spec=params.augment_test, seed=params.seed, key="augment_test")
    return TrainSetup(precision, *stats, test_transform, parse_views(params.tta))


def train_fold(
    fold: int,
    params: Params,
    data: FoldData,
    setup: TrainSetup,
    store: ResumeStore,
    *,
    on_epoch: Callable[..., None],
    run: int = 0,
) -> dict:
    """Train (or resume, or reuse) fold `fold`; return its best epoch, weights, OOF probs and history.

    `run`: which of the fold's seeds (`params.seed` is that seed), kept apart in the resume store."""
    saved = store.read(fold, run)
    if saved is not None and saved["finished"]:
        log.info("fold %d: finished by an earlier, interrupted run; reusing its results", fold)
        for entry in saved["history"]:
            on_epoch(EpochLog(**entry), replayed=True)
        return saved
    seed_everything(params.seed + fold)
    trim_heap()  # what the fold before left free
    train_rows, valid_rows = np.flatnonzero(data.fold_of != fold), np.flatnonzero(data.fold_of == fold)
    num_classes, task = len(data.task.classes), data.task
    model = build_model(name=params.model, num_classes=num_classes, in_chans=data.images.shape[-1],
                        img_size=params.img_size, pretrained=params.pretrained)  # fmt: skip
    epoch_batches = _train_batches(params, data, train_rows, fold, num_classes, setup.precision.device)
    batches = lambda epoch: Tracked(epoch_batches(epoch), f"fold {fold} epoch {epoch + 1}", log=log)  # noqa: E731
    weights = inverse_frequency(data.labels[train_rows], num_classes) if params.class_balance == "weights" else None
    config = fit_config(params)
    trainer = build_trainer(model, config=config, precision=setup.precision, steps_per_epoch=len(batches(0)),
                            num_classes=num_classes, class_weights=None if weights is None else torch.from_numpy(weights),
                            multilabel=task.multilabel)  # fmt: skip
    distributed.wrap(trainer)
    if saved is not None:
        log.info("fold %d: resuming after epoch %d of an interrupted run", fold, saved["epochs_done"])
        for entry in saved["history"]:
            on_epoch(EpochLog(**entry), replayed=True)

    def epoch_done(entry: EpochLog, state: Callable[[], dict]) -> None:
        trim_heap()  # between the validation pass and the next epoch's steps
        if distributed.is_main():
            store.write(fold, {"finished": False, **state()}, run)  # first, so an interrupted run resumes after it
        on_epoch(entry)

    mean, std = torch.tensor(setup.mean), torch.tensor(setup.std)
    held_out = eval_batches(data.images, rows=valid_rows, batch_size=params.batch_size, transform=setup.test_transform,
                            size=params.img_size, device=setup.precision.device)  # fmt: skip
    valid_batches = lambda: Tracked(held_out, f"fold {fold} validation", log=log)  # noqa: E731
    truth = data.labels[valid_rows]

    def score(probs: np.ndarray) -> float:
        return score_probs(task.metric, task.kind, truth, probs, tune_thresholds(task.metric, task.kind, truth, probs))

    result = fit(trainer, batches, valid_batches, truth, config=config, mean=mean, std=std,
                 resume=saved, on_epoch=epoch_done, score=score)  # fmt: skip
    oof = result.best_probs
    if setup.views != [IDENTITY]:
        oof = predict_probs(result.model, valid_batches(), precision=setup.precision, mean=mean, std=std,
                            views=setup.views, multilabel=task.multilabel)  # fmt: skip
    done = {
        "finished": True, "best_epoch": result.best_epoch, "best_state": result.best_state, "oof_probs": oof,
        "history": [dataclasses.asdict(h) for h in result.history],
    }  # fmt: skip
    if distributed.is_main():
        store.write(fold, done, run)
    return done


def _train_batches(
    params: Params, data: FoldData, rows: np.ndarray, fold: int, num_classes: int, device: torch.device
) -> Callable:
    """`epoch -> batches` of the fold's training `rows`: all of them in a shuffled order, or each epoch's
    class-balanced draw (`class_balance: sampler`) and/or this process's share (`devices` > 1)."""
    spec = resolve_augment(params.augment, params.img_size)
    world, rank = distributed.world_size(), distributed.rank()
    if params.batch_size % world:
        raise distributed.DevicesError(f"batch_size: {params.batch_size} must divide evenly among devices={world}")
    images = data.train_images if data.train_images is not None else data.images
    labels = data.labels[rows]
    targets = labels if data.targets is None else data.targets[rows]  # what the loss compares the logits with

    def make(subset: np.ndarray, seed: int) -> Callable:
        return train_batches(images, targets[subset], spec, rows=rows[subset], batch_size=params.batch_size // world,
                             seed=seed, fold=fold, size=params.img_size, num_workers=params.num_workers,
                             loader=params.loader, device=device)  # fmt: skip

    weights = inverse_frequency(labels, num_classes)[labels] if params.class_balance == "sampler" else None
    if weights is None and world == 1:
        return make(np.arange(len(rows)), params.seed)

    def for_epoch(epoch: int) -> Iterable:
        subset = epoch_subset(len(labels), seed=params.seed, fold=fold, epoch=epoch, weights=weights, rank=rank, world=world)
        return make(subset, params.seed + 7919 * rank)(epoch)  # each process its own augmentations

    return for_epoch


def epoch_subset(
    n: int, *, seed: int, fold: int, epoch: int, weights: np.ndarray | None = None, rank: int = 0, world: int = 1
) -> np.ndarray:
    """The training images of one epoch for process `rank` of `world`: a seeded draw of n images
    (with replacement in proportion to `weights`, else a permutation), dealt out in turn so every
    process gets the same number and together they cover the draw."""
    rng = np.random.default_rng([seed, fold, epoch])  # private: the global generators stay untouched
    drawn = rng.choice(n, size=n, replace=True, p=weights / weights.sum()) if weights is not None else rng.permutation(n)
    return drawn[: n - n % world][rank::world]
