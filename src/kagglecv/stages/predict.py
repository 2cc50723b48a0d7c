"""Stage `predict`: average the fold models' probabilities over TTA views and folds; write the submission.

Reads params: `batch_size`, `amp`, `channels_last`, `tta`, `task`, `metric`, `data.layout`; files:
`models/fold<k>.pt` (each names its model, task, classes, normalisation and `augment_test`
pipeline), `predictions/thresholds.json` (the decision rule `evaluate` tuned on the out-of-fold
predictions, so the test answers are decided as the CV figure was), `data/raw/`. Writes:
`submissions/submission.csv` (the sample submission's header, ids, order and label type, answers
in the task's shape: see `kagglecv.submission`), `predictions/test_probs.csv` (averaged class
probabilities per test id),
`predictions/test_views.npz` (`probs` (folds, views, N, classes) with `ids`, `classes`, `views`:
every fold's and view's probabilities, to ensemble across experiments) and
`metrics/leaderboard.json` (`leaderboard.<metric>` where the competition has a `solution.csv`,
scored by `kagglecv.scoring`; empty otherwise). The submission passes the submission checker
(`kagglecv.submission_check`) before anything is written; one that fails it leaves every previous
file in place.

Before writing, the test predictions' class shares are compared with the training labels' and with
the out-of-fold predictions' (`predictions/oof.csv`, beside `test_probs.csv`, when there):
`metrics/predict.json` records the larger total variation distance as `predict.distribution_shift`,
and the log warns when it is implausible for a test set of that size, a sign of mismatched ids or
classes that shows even without a solution file.
"""

from __future__ import annotations

import json
import logging
import pickle
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from kagglecv.artifacts import atomic_path, write_csv, write_json, write_text
from kagglecv.data import CompetitionError
from kagglecv.engine import Precision, predict_views, select_precision
from kagglecv.ingest import read_competition
from kagglecv.loaders import eval_batches
from kagglecv.metrics import needs_thresholds
from kagglecv.models import ModelError, build_model
from kagglecv.params import Params, ParamsError, load_params
from kagglecv.paths import Paths
from kagglecv.progress import Tracked
from kagglecv.runtime import main_of
from kagglecv.scoring import score_submission
from kagglecv.submission import (
    SubmissionError,
    class_shift,
    make_submission,
    read_sample_submission,
    render_submission,
)
from kagglecv.tasks import Task, task_of
from kagglecv.transforms import TransformError, build_transforms
from kagglecv.tta import TTAError, parse_views

log = logging.getLogger("kagglecv.predict")

def measure_shift(
    probs: np.ndarray, classes: list[str], train_labels: list[str], oof_path: Path, *, multilabel: bool = False
) -> float:
    """The largest distance of the test predictions' class shares (of a multilabel task: of the likeliest
    tag's) from the training labels' and the out-of-fold predictions' (`oof_path`, when it exists); warns
    when one is implausible."""
    counts = Counter(tag for label in train_labels for tag in label.split()) if multilabel else Counter(train_labels)
    references = {"training labels": np.array([counts[c] for c in classes], float)}
    if oof_path.exists():
        oof = pd.read_csv(oof_path, dtype={"id": str, "label": str})
        if list(oof.columns[3:]) == classes:
            predicted = oof[oof["fold"] >= 0][classes].to_numpy(float).argmax(1)
            references["out-of-fold predictions"] = np.bincount(predicted, minlength=len(classes)).astype(float)
    largest = 0.0
    for name, reference in references.items():
        if reference.sum() == 0:
            continue
        distance, limit = class_shift(probs, reference)
        largest = max(largest, distance)
        if distance > limit:
            log.warning(
                "the test predictions' classes are distributed unlike the %s (total variation %.3f, above the %.3f "
                "chance allows for %d images): check that test ids match their images and labels their classes",
                name, distance, limit, len(probs),
            )  # fmt: skip
    return round(largest, 4)


def _fold_and_seed(path: Path) -> tuple[int, int]:
    """`fold3.pt` -> (3, 0); `fold3-2.pt`, the fold's model from its third seed, -> (3, 2)."""
    fold, _, run = path.stem.removeprefix("fold").partition("-")
    return int(fold), int(run or 0)


def read_checkpoints(models_dir: Path) -> list[dict]:
    paths = sorted(models_dir.glob("fold*.pt"), key=_fold_and_seed)
    if not paths:
        raise CompetitionError(f"{models_dir} has no fold checkpoints: run 'dvc repro train' first")
    checkpoints = []
    for path in paths:
        try:
            checkpoints.append(torch.load(path, map_location="cpu", weights_only=False))
        except (OSError, RuntimeError, EOFError, pickle.UnpicklingError) as err:
            raise CompetitionError(f"{path} is not a readable checkpoint ({err}): run 'dvc repro -f train'") from err
    return checkpoints


def predict_test(
    checkpoints: list[dict], images_for: Callable[[int, int], np.ndarray], *, batch_size: int, precision: Precision,
    views: list[str],
) -> np.ndarray:  # fmt: skip
    """Each checkpoint's softmax probabilities per view: (folds, views, N, num_classes)."""
    out = []
    for ckpt in checkpoints:
        model = build_model(name=ckpt["model"], num_classes=ckpt["num_classes"], in_chans=ckpt["in_chans"], img_size=ckpt["img_size"])
        model.load_state_dict(ckpt["state_dict"])
        model.to(precision.device, memory_format=torch.channels_last if precision.channels_last else torch.preserve_format)
        images = images_for(ckpt.get("cache_size", ckpt["img_size"]), ckpt["in_chans"])
        transform = build_transforms(spec=ckpt.get("augment_test", []), seed=0, key="augment_test")
        batches = eval_batches(images, batch_size=batch_size, transform=transform, size=ckpt["img_size"], device=precision.device)
        out.append(predict_views(
            model, Tracked(batches, f"fold {ckpt['fold']} test", log=log), precision=precision,
            mean=torch.tensor(ckpt["mean"]), std=torch.tensor(ckpt["std"]), views=views,
            multilabel=ckpt.get("task") == "multilabel",
        ))  # fmt: skip
    return np.stack(out)


def write_views(path: Path, probs: np.ndarray, ids: list[str], classes: list[str], views: list[str]) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, probs=probs.astype(np.float32), ids=np.array(ids), classes=np.array(classes),
                                views=np.array(views))  # fmt: skip


def read_thresholds(path: Path, task: Task) -> list[float]:
    """The thresholds `evaluate` tuned for `task`; they must be for its task, metric and classes. A metric
    that needs none (every multiclass one) does without the file."""
    if not path.exists():
        if not needs_thresholds(task.metric, task.kind):
            return []
        raise CompetitionError(f"{path} missing: run 'dvc repro evaluate' first")
    rule = json.loads(path.read_text())
    if (rule.get("task"), rule.get("metric"), rule.get("classes")) != (task.kind, task.metric, task.classes):
        raise CompetitionError(f"{path} is for another task or metric: run 'dvc repro evaluate' again")
    return rule["thresholds"]


def run(params: Params, paths: Paths = Paths()) -> dict[str, float]:
    """Predict the test set; write the submission, the averaged and the per-view probabilities and the score."""
    competition = read_competition(paths.raw, params.data.layout, labels_file=params.data.labels_file,
                                   max_megapixels=params.data.max_megapixels)  # fmt: skip
    task = task_of(params, competition)
    thresholds = read_thresholds(paths.thresholds, task)
    checkpoints = read_checkpoints(paths.models)
    classes = checkpoints[0]["classes"]
    if classes != task.classes or (checkpoints[0].get("task") == "multilabel") != task.multilabel:
        raise CompetitionError(f"{paths.models} holds models of other classes or task: run 'dvc repro train' again")
    cache: dict[tuple[int, int], np.ndarray] = {}

    def images_for(img_size: int, channels: int) -> np.ndarray:
        if (img_size, channels) not in cache:
            cache[img_size, channels] = competition.test_images.load(img_size=img_size, channels=channels)
        return cache[img_size, channels]

    views = parse_views(params.tta)
    precision = select_precision(params.amp, channels_last=params.channels_last)
    per_view = predict_test(checkpoints, images_for, batch_size=params.batch_size, precision=precision, views=views)
    probs = per_view.mean(axis=(0, 1))
    sample = read_sample_submission(competition.sample_submission, task)
    submission = make_submission(sample, competition.test_ids, probs, classes, task=task, thresholds=thresholds)
    # Check and score before writing anything, so a failure leaves the previous submission and its score together.
    text = render_submission(submission, sample, classes)
    shift = measure_shift(probs, classes, competition.train_labels, paths.oof, multilabel=task.multilabel)
    scores = score_submission(submission, competition.solution, task, sample) if competition.solution else {}
    write_views(paths.test_views, per_view, competition.test_ids, classes, views)
    frame = pd.DataFrame(probs, columns=classes)
    frame.insert(0, "id", competition.test_ids)
    write_csv(paths.test_probs, frame, float_format="%.6g")
    write_text(paths.submission, text)
    write_json(paths.leaderboard_metrics, {"leaderboard": scores})
    write_json(paths.predict_metrics, {"predict": {"distribution_shift": shift}})
    log.info("%d test predictions from %d folds x %d views -> %s %s, class distribution shift %.3f",
             len(submission), len(checkpoints), len(views), paths.submission, scores, shift)  # fmt: skip
    return scores


main = main_of(
    lambda: run(load_params()),
    ParamsError, CompetitionError, ModelError, SubmissionError, TransformError, TTAError,
)  # fmt: skip

if __name__ == "__main__":
    main()
