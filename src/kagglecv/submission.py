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


def read_solution(path: Path, id_column: str, answer_columns: list[str]) -> pd.Series:
    """The true label of each test id, from a solution CSV, indexed by id (text).

    Format: the submission's id column (or else the first column) and one true-label column
    (named like the submission's label column, or the only other column); Kaggle's `Usage`
    column is ignored. For probability submissions the solution may instead be one-hot, with
    the submission's class columns; the true class is the column holding the largest value.
    """
    solution = pd.read_csv(path, dtype=str, keep_default_na=False)
    key = id_column if id_column in solution.columns else solution.columns[0]
    rest = [c for c in solution.columns if c != key and c.lower() != "usage"]
    if len(answer_columns) > 1 and set(answer_columns) <= set(rest):
        one_hot = solution[answer_columns].apply(pd.to_numeric, errors="coerce").to_numpy(float)
        true = pd.Series(np.asarray(answer_columns)[np.nan_to_num(one_hot, nan=-1.0).argmax(1)], dtype=str)
    elif len(rest) == 1 or (len(answer_columns) == 1 and answer_columns[0] in rest):
        true = solution[answer_columns[0] if answer_columns[0] in rest else rest[0]]
    else:
        found = ", ".join(solution.columns)
        raise SubmissionError(f"{path}: needs an id column and one column of true labels, found {found}")
    if solution[key].duplicated().any():
        raise SubmissionError(f"{path}: the id column {key!r} repeats ids; each test id needs one row")
    return pd.Series(true.to_numpy(), index=solution[key].to_numpy())


def score_submission(submission: pd.DataFrame, solution_path: Path) -> dict[str, float]:
    """Leaderboard score: `accuracy` for a label column, multi-class `log_loss` for probability columns."""
    id_column, answer_columns = submission.columns[0], list(submission.columns[1:])
    truth = read_solution(solution_path, id_column, answer_columns)
    ids = submission[id_column].astype(str)
    missing = ids[~ids.isin(truth.index)].tolist()
    if missing:
        raise SubmissionError(f"{solution_path}: no true label for {len(missing)} submission id(s), e.g. {missing[:3]}")
    true = truth.loc[ids].to_numpy()
    if len(answer_columns) == 1:
        return {"accuracy": float(accuracy_score(true, submission[answer_columns[0]].astype(str)))}
    unknown = sorted(set(true) - set(answer_columns))
    if unknown:
        raise SubmissionError(f"{solution_path}: true labels {unknown[:3]} are not among the submission's columns")
    probs = submission[answer_columns].to_numpy(float)
    probs = probs / probs.sum(1, keepdims=True)
    return {"log_loss": float(log_loss(true, probs, labels=answer_columns))}
