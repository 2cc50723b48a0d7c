"""Scoring a submission the way the leaderboard would, against the competition's answers (a solution CSV).

`score_submission` reads the answers back from the submission frame as Kaggle reads them (labels,
tags, a probability or 0/1 column per class or label, the positive class's probability, k ranked
labels) and scores them by the task's metric (`kagglecv.metrics`); `predict` records the figure as
`leaderboard.<metric>`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import accuracy_score, log_loss

from kagglecv.metrics import decide, get_metric, score_answers
from kagglecv.submission import SubmissionError
from kagglecv.submission_check import INTEGRAL_DECIMAL, SampleSubmission
from kagglecv.tasks import Task, encode_labels, split_tags, tag_key


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


def score_submission(
    submission: pd.DataFrame, solution_path: Path, task: Task | None = None, sample: SampleSubmission | None = None
) -> dict[str, float]:
    """Leaderboard score: by the task's metric (`score_task`), or without a task `accuracy` for a label column,
    multi-class `log_loss` for probability columns."""
    if task is not None and sample is not None and not (task.kind == "multiclass" and task.metric in ("accuracy", "log_loss")):
        return {task.metric: score_task(submission, solution_path, task, sample)}
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


def read_truth(path: Path, id_column: str, task: Task) -> pd.Series:
    """Each test id's true answer in `task`'s labels (tags space-separated), from a solution CSV: an id column
    and a label (or tag-string) column, or one 0/1 column per label; a `Usage` column is ignored."""
    solution = pd.read_csv(path, dtype=str, keep_default_na=False)
    key = id_column if id_column in solution.columns else solution.columns[0]
    rest = [c for c in solution.columns if c != key and c.lower() != "usage"]
    label_columns = [c for c in rest if tag_key(c) in task.classes]
    if task.multilabel and len(label_columns) >= 2:
        ones = solution[label_columns].apply(lambda col: col.str.strip() == "1").to_numpy()
        true = [" ".join(tag_key(c) for c, on in zip(label_columns, row) if on) for row in ones]
    elif len(rest) == 1:
        true = solution[rest[0]].str.strip().tolist()
    else:
        raise SubmissionError(f"{path}: needs an id column and one column of true labels, found {', '.join(solution.columns)}")
    return pd.Series(true, index=solution[key].to_numpy())


def score_task(submission: pd.DataFrame, solution_path: Path, task: Task, sample: SampleSubmission) -> float:
    """The submission's score by `task.metric` against the solution, read back from its answers as the
    leaderboard reads them: decisions (labels, tags, 0/1 columns), scores (probabilities) or k ranked labels."""
    id_column = submission.columns[0]
    truth = read_truth(solution_path, id_column, task)
    ids = submission[id_column].astype(str)
    missing = ids[~ids.isin(truth.index)].tolist()
    if missing:
        raise SubmissionError(f"{solution_path}: no true label for {len(missing)} submission id(s), e.g. {missing[:3]}")
    true_labels = [_as_class(label, task) for label in truth.loc[ids]]
    unknown = sorted({t for label in true_labels for t in (split_tags(label) if task.multilabel else [label])} - set(task.classes))
    if unknown:
        raise SubmissionError(f"{solution_path}: true labels {unknown[:3]} are not training classes")
    true = encode_labels(task, true_labels)
    index = {c: j for j, c in enumerate(task.classes)}
    column = submission[submission.columns[1]].astype(str)
    kind, k = sample.kind, len(task.classes)
    if kind == "label":
        answers = np.array([index[_as_class(v, task)] for v in column])
    elif kind == "positive_prob":
        answers = column.astype(float).to_numpy()
    elif kind == "tags":
        answers = encode_labels(task, column.tolist())
    elif kind == "top_k":
        answers = np.array([[index[_as_class(v, task)] for v in row.split()] + [-1] * (sample.k - len(row.split()))
                            for row in column])  # fmt: skip
    else:  # probs, columns: one column per class or label
        answers = np.zeros((len(submission), k))
        for c in submission.columns[1:]:
            answers[:, index[tag_key(c)]] = submission[c].astype(float)
        if get_metric(task.metric).input == "decisions" and kind == "probs":
            answers = decide(task.kind, answers)
    return float(score_answers(task.metric, true, answers, k))


def _as_class(label: str, task: Task) -> str:
    """`label` as the training data spells it: an integer of the sample ('1') is the class '1.0' where that is one."""
    if label in task.classes or not INTEGRAL_DECIMAL.match(label + ".0"):
        return label
    return next((c for c in task.classes if INTEGRAL_DECIMAL.match(c) and c.split(".")[0] == label), label)
