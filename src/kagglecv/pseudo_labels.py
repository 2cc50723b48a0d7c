"""Pseudo-labelling: test images an earlier run predicted confidently join every fold's training part.

`pseudo_label.source` names a revision (an experiment, branch, tag or commit, read through DVC's
API, see `kagglecv.revisions`) whose `predictions/test_probs.csv` (its fold ensemble's test
probabilities) labels the test images; those whose top class probability reaches
`pseudo_label.threshold` are added with that class (a hard label) at fold -1 (`TRAIN_ONLY_FOLD`):
trained on by every fold's model, validated by none, so the out-of-fold predictions and the cv
figures are still those of training images no model of theirs saw.
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import pandas as pd

from kagglecv.data import TRAIN_ONLY_FOLD, Competition, CompetitionError
from kagglecv.fold_training import FoldData
from kagglecv.params import Params
from kagglecv.paths import Paths
from kagglecv.revisions import read_csv_at
from kagglecv.tasks import Task

log = logging.getLogger("kagglecv.train")


def choose_pseudo_labels(params: Params, paths: Paths, competition: Competition, task: Task) -> pd.DataFrame:
    """id, label, confidence and row (its position among the test images) of each test image chosen;
    none when `pseudo_label.source` is empty. Single-label tasks only: a multilabel image has no top class."""
    chosen = pd.DataFrame({"id": pd.Series(dtype=str), "label": pd.Series(dtype=str),
                           "confidence": pd.Series(dtype=float), "row": pd.Series(dtype=int)})  # fmt: skip
    source = params.pseudo_label.source
    if not source:
        return chosen
    if task.multilabel:
        raise CompetitionError("pseudo_label.source: pseudo-labels need a single-label task, this one is multilabel; "
                               "set pseudo_label.source to \"\"")  # fmt: skip
    probs = read_csv_at(paths.root, source, str(Paths().test_probs), dtype={"id": str}, keep_default_na=False)
    classes = list(probs.columns[1:])
    if classes != task.classes or sorted(probs["id"]) != sorted(competition.test_ids):
        raise CompetitionError(
            f"pseudo_label.source: {source}'s predictions/test_probs.csv is for other classes or test ids than "
            f"{paths.raw}: name a revision of this competition"
        )
    values = probs[classes].to_numpy(float)
    confidence = values.max(1) / values.sum(1)
    keep = np.flatnonzero(confidence >= params.pseudo_label.threshold)
    row_of = {test_id: i for i, test_id in enumerate(competition.test_ids)}
    chosen = pd.DataFrame({
        "id": probs["id"].to_numpy()[keep], "label": np.asarray(classes)[values[keep].argmax(1)],
        "confidence": confidence[keep].round(6), "row": [row_of[i] for i in probs["id"].to_numpy()[keep]],
    })  # fmt: skip
    log.info("pseudo-labels: %d of %d test images reach %.3f in %s's test predictions", len(chosen), len(probs),
             params.pseudo_label.threshold, source)  # fmt: skip
    return chosen


def with_pseudo_labels(data: FoldData, chosen: pd.DataFrame, competition: Competition, params: Params) -> FoldData:
    """`data` with the `chosen` test images (decoded like the training images) appended at fold -1."""
    if chosen.empty:
        return data
    test = competition.test_images.select(chosen["row"].tolist())
    images = test.load(img_size=params.cache_size, channels=params.data.channels or data.images.shape[-1])
    classes = data.task.classes
    labels = np.array([classes.index(label) for label in chosen["label"]])
    return dataclasses.replace(
        data, images=np.concatenate([data.images, images]), labels=np.concatenate([data.labels, labels]),
        fold_of=np.concatenate([data.fold_of, np.full(len(chosen), TRAIN_ONLY_FOLD)]),
    )  # fmt: skip
