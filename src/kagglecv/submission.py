"""Submissions shaped by the competition's own sample submission, and scored like a leaderboard.

The sample submission decides everything: the id column's name, the ids' text and order, and
whether the answer is one label column or one probability column per class.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import accuracy_score, log_loss

PROB_EPS = 1e-15  # log-loss competitions clip to [eps, 1 - eps]


class SubmissionError(ValueError):
    """The submission cannot match the sample submission; the message says why."""


@dataclass(frozen=True)
class SampleSubmission:
    path: Path
    columns: list[str]
    ids: list[str]  # as text, in the file's order

    @property
    def id_column(self) -> str:
        return self.columns[0]

    @property
    def kind(self) -> str:
        """'label' (one answer column) or 'probs' (one column per class)."""
        return "label" if len(self.columns) == 2 else "probs"


def read_sample_submission(path: Path) -> SampleSubmission:
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    if frame.shape[1] < 2:
        raise SubmissionError(f"{path}: a sample submission needs an id column and at least one answer column")
    return SampleSubmission(path=path, columns=list(frame.columns), ids=frame.iloc[:, 0].tolist())


def make_submission(
    sample: SampleSubmission, test_ids: list[str], probs: np.ndarray, classes: list[str]
) -> pd.DataFrame:
    """The submission frame for `probs` (N, num_classes) of `test_ids`, in the sample's ids and order."""
    position = {test_id: i for i, test_id in enumerate(test_ids)}
    missing = [i for i in sample.ids if i not in position]
    if missing:
        raise SubmissionError(f"{sample.path}: {len(missing)} ids have no test image, e.g. {missing[:3]}")
    probs = probs[[position[i] for i in sample.ids]]
    frame = pd.DataFrame({sample.id_column: sample.ids})
    if sample.kind == "label":
        frame[sample.columns[1]] = [classes[k] for k in probs.argmax(1)]
        return frame
    unknown = [c for c in sample.columns[1:] if c not in classes]
    if unknown:
        raise SubmissionError(f"{sample.path}: probability columns {unknown[:5]} are not training classes")
    clipped = np.clip(probs, PROB_EPS, 1 - PROB_EPS)
    clipped = clipped / clipped.sum(1, keepdims=True)
    for column in sample.columns[1:]:
        frame[column] = clipped[:, classes.index(column)]
    return frame


def score_submission(submission: pd.DataFrame, solution_path: Path) -> dict[str, float]:
    """Leaderboard score against a solution file with the same id column: accuracy or log loss."""
    solution = pd.read_csv(solution_path, dtype=str, keep_default_na=False)
    id_column = submission.columns[0]
    if id_column not in solution.columns:
        raise SubmissionError(f"{solution_path}: no {id_column!r} column to match the submission's ids")
    merged = submission.astype(str).merge(solution, on=id_column, suffixes=("", "_true"), validate="1:1")
    if len(merged) != len(submission):
        raise SubmissionError(f"{solution_path}: covers {len(merged)} of {len(submission)} submission ids")
    answer_columns = list(submission.columns[1:])
    if len(answer_columns) == 1:
        column = answer_columns[0]
        return {"accuracy": float(accuracy_score(merged[column + "_true"], merged[column]))}
    true_column = next(c for c in solution.columns if c != id_column and c not in answer_columns) \
        if any(c not in answer_columns and c != id_column for c in solution.columns) else None
    if true_column is None:
        raise SubmissionError(f"{solution_path}: needs a column with each image's true class")
    probs = submission[answer_columns].to_numpy(float)
    return {"log_loss": float(log_loss(merged[true_column], probs, labels=answer_columns))}
