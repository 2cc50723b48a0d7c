"""Pseudo-labelling: test images a fold ensemble predicted confidently join every fold's training part.

`pseudo_label.source` says whose test probabilities label the test images: a revision (an
experiment, branch, tag or commit, read through DVC's API, see `kagglecv.revisions`), whose
`predictions/test_probs.csv` holds its fold ensemble's; or `first_round`, this experiment's own
folds trained once without pseudo-labels, their test probabilities averaged (`predict_test_probs`).
Those test images whose top class probability reaches `pseudo_label.threshold` are added at fold -1
(`TRAIN_ONLY_FOLD`): trained on by every fold's model, validated by none, so the out-of-fold
predictions and the cv figures are still those of training images no model of theirs saw. Their
label is the top class; with `pseudo_label.labels: soft` training targets their probability row
instead (renormalised to sum 1: a distillation of the ensemble), the training images one-hot rows.
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import pandas as pd
import torch

from kagglecv.data import TRAIN_ONLY_FOLD, Competition, CompetitionError
from kagglecv.engine import predict_probs
from kagglecv.fold_training import FoldData, TrainSetup
from kagglecv.loaders import eval_batches
from kagglecv.models import build_model
from kagglecv.params import FIRST_ROUND, Params
from kagglecv.paths import Paths
from kagglecv.revisions import read_csv_at
from kagglecv.tasks import Task

log = logging.getLogger("kagglecv.train")


def no_pseudo_labels() -> pd.DataFrame:
    return pd.DataFrame({"id": pd.Series(dtype=str), "label": pd.Series(dtype=str), "confidence": pd.Series(dtype=float),
                         "row": pd.Series(dtype=int), "probs": pd.Series(dtype=object)})  # fmt: skip


def check_single_label(task: Task) -> None:
    if task.multilabel:
        raise CompetitionError("pseudo_label.source: pseudo-labels need a single-label task, this one is multilabel; "
                               "set pseudo_label.source to \"\"")  # fmt: skip


def read_source_probs(params: Params, paths: Paths, competition: Competition, task: Task) -> np.ndarray:
    """The test probabilities (N, K), in the competition's test order, of the revision `pseudo_label.source`."""
    source = params.pseudo_label.source
    probs = read_csv_at(paths.root, source, str(Paths().test_probs), dtype={"id": str}, keep_default_na=False)
    if list(probs.columns[1:]) != task.classes or sorted(probs["id"]) != sorted(competition.test_ids):
        raise CompetitionError(
            f"pseudo_label.source: {source}'s predictions/test_probs.csv is for other classes or test ids than "
            f"{paths.raw}: name a revision of this competition"
        )
    return probs.set_index("id").loc[competition.test_ids, task.classes].to_numpy(float)


def choose_pseudo_labels(params: Params, paths: Paths, competition: Competition, task: Task) -> pd.DataFrame:
    """id, label, confidence, row (its position among the test images) and probs of each test image the revision
    `pseudo_label.source` labels confidently enough; none when it is empty or `first_round` (see
    `select_confident`). Single-label tasks only: a multilabel image has no top class."""
    source = params.pseudo_label.source
    if not source or source == FIRST_ROUND:
        return no_pseudo_labels()
    check_single_label(task)
    return select_confident(read_source_probs(params, paths, competition, task), competition.test_ids, task.classes,
                            params.pseudo_label.threshold, source=f"{source}'s test predictions")  # fmt: skip


def select_confident(
    probs: np.ndarray, ids: list[str], classes: list[str], threshold: float, *, source: str
) -> pd.DataFrame:  # fmt: skip
    """The test images (`probs` (N, K) in the order of `ids`) whose top class probability reaches `threshold`,
    in that order: id, label (the top class), confidence, row and probs (its row (K,), renormalised to sum 1)."""
    confidence = probs.max(1) / probs.sum(1)
    keep = np.flatnonzero(confidence >= threshold)
    log.info("pseudo-labels: %d of %d test images reach %.3f in %s", len(keep), len(ids), threshold, source)
    rows = probs[keep] / probs[keep].sum(1, keepdims=True)  # test_probs.csv's six digits need not sum to 1
    return pd.DataFrame({
        "id": np.asarray(ids, dtype=object)[keep], "label": np.asarray(classes)[probs[keep].argmax(1)],
        "confidence": confidence[keep].round(6), "row": keep, "probs": list(rows),
    })  # fmt: skip


def load_test_images(
    competition: Competition, params: Params, data: FoldData, rows: list[int] | None = None
) -> np.ndarray:  # fmt: skip
    """The test images (those at `rows`, or all) decoded as the training images were (side `cache_size`, channels)."""
    test = competition.test_images if rows is None else competition.test_images.select(rows)
    return test.load(img_size=params.cache_size, channels=params.data.channels or data.images.shape[-1])


def predict_test_probs(
    states: list[dict], competition: Competition, params: Params, data: FoldData, setup: TrainSetup
) -> np.ndarray:  # fmt: skip
    """The fold ensemble's test probabilities (N, K): every model's (`states`: finished folds, with `best_state`)
    averaged over the `tta` views, then over the models, as `predict` averages them."""
    images = load_test_images(competition, params, data)
    device = setup.precision.device
    batches = eval_batches(images, batch_size=params.batch_size, transform=setup.test_transform, size=params.img_size,
                           device=device)  # fmt: skip
    mean, std = torch.tensor(setup.mean), torch.tensor(setup.std)
    probs = []
    for state in states:
        model = build_model(name=params.model, num_classes=len(data.task.classes), in_chans=images.shape[-1],
                            img_size=params.img_size)  # fmt: skip
        model.load_state_dict(state["best_state"])
        model.to(device, memory_format=torch.channels_last if setup.precision.channels_last else torch.preserve_format)
        probs.append(predict_probs(model, batches, precision=setup.precision, mean=mean, std=std, views=setup.views))
    return np.mean(probs, axis=0)


def with_pseudo_labels(data: FoldData, chosen: pd.DataFrame, competition: Competition, params: Params) -> FoldData:
    """`data` with the `chosen` test images (decoded like the training images) appended at fold -1; with
    `pseudo_label.labels: soft`, `targets` too: one-hot rows for the training images, `probs` for these."""
    if chosen.empty:
        return data
    images = load_test_images(competition, params, data, chosen["row"].tolist())
    classes = data.task.classes
    labels = np.array([classes.index(label) for label in chosen["label"]])
    targets = None
    if params.pseudo_label.labels == "soft":  # float32 (N + n, K)
        one_hot = np.eye(len(classes), dtype=np.float32)[data.labels]
        targets = np.concatenate([one_hot, np.stack(chosen["probs"]).astype(np.float32)])
    return dataclasses.replace(
        data, images=np.concatenate([data.images, images]), labels=np.concatenate([data.labels, labels]),
        fold_of=np.concatenate([data.fold_of, np.full(len(chosen), TRAIN_ONLY_FOLD)]), train_images=None,
        targets=targets,
    )  # fmt: skip
