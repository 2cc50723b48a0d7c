"""What a competition asks for: its task, the metric it is scored by, its classes and the shape of its answers.

`resolve_task` reads them from the training labels and the sample submission, unless `task:` and
`metric:` in params.yaml say otherwise (a competition states its metric on its web page, not in
its files):

- multilabel: labels that are space-separated tags (`agriculture clear primary`), each tag also
  found in other labels, or one 0/1 column per label in the labels CSV; natural metric `f2`
  for a tag-string sample submission, `roc_auc` for one with a column per label;
- binary: two classes; the positive class is the second in sorted order (`1`); `roc_auc`;
- ordinal: graded classes, chosen with `task: ordinal` or `metric: qwk`; `qwk`;
- multiclass: the rest; `accuracy`, `log_loss` when the sample has a probability column per
  class, `map@k` when its answers are k space-separated labels.

The answer shape (`Task.answer`) follows the sample submission and the metric: `label` (a class or
grade), `probs` (a probability column per class), `tags` (space-separated labels), `columns` (a
column per label: probabilities for a score metric, else 0/1), `positive_prob` (the positive
class's probability) or `top_k` (k space-separated classes, most likely first).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from kagglecv.data import Competition, sort_labels
from kagglecv.metrics import MetricError, get_metric, top_k
from kagglecv.params import Params

ANSWERS = ("label", "probs", "tags", "columns", "positive_prob", "top_k")


@dataclass(frozen=True)
class Task:
    kind: str  # multiclass | multilabel | binary | ordinal
    metric: str  # resolved: accuracy, f2, map@5, ...
    classes: list[str]  # class names in output order; for multilabel the tags
    answer: str  # the submission's shape, one of ANSWERS

    @property
    def multilabel(self) -> bool:
        return self.kind == "multilabel"

    @property
    def k(self) -> int:
        """Answers per image of a `top_k` submission."""
        return top_k(self.metric) if self.answer == "top_k" else 1


def tag_key(name: str) -> str:
    """A label column's name as a tag: whitespace inside it as underscores (`ETT - Abnormal` -> `ETT_-_Abnormal`)."""
    return "_".join(name.split())


def split_tags(label: str) -> list[str]:
    return label.split()


def is_multilabel(labels: list[str], from_columns: bool = False) -> bool:
    """Some label holds several tags, and (unless the labels came from 0/1 columns) each tag appears in at
    least two different labels, so a multi-word class name (`Loose Silky-bent`) stays one class."""
    distinct = set(labels)
    if not any(len(split_tags(label)) > 1 for label in distinct):
        return False
    if from_columns:
        return True
    found_in = Counter(tag for label in distinct for tag in set(split_tags(label)))
    return all(n >= 2 for n in found_in.values())


def read_sample_shape(path: Path) -> tuple[list[str], list[str]]:
    """The sample submission's columns and its first answer column, as text."""
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    return list(frame.columns), frame.iloc[:, 1].str.strip().tolist() if frame.shape[1] > 1 else []


def resolve_task(
    *, task: str, metric: str, labels: list[str], sample_columns: list[str], sample_answers: list[str],
    from_columns: bool = False,
) -> Task:  # fmt: skip
    """The task, metric, classes and answer shape (`auto` values resolved; see the module docstring)."""
    kind = task
    if kind == "auto":
        if is_multilabel(labels, from_columns):
            kind = "multilabel"
        elif metric == "qwk":
            kind = "ordinal"
        elif len(set(labels)) == 2:
            kind = "binary"
        else:
            kind = "multiclass"
    if kind == "multilabel":
        classes = sort_labels({tag for label in labels for tag in split_tags(label)})
    else:
        classes = sort_labels(set(labels))
    if kind == "binary" and len(classes) != 2:
        raise MetricError(f"task: binary needs two classes, the training labels hold {len(classes)}; set task: auto")
    per_class = len(sample_columns) > 2
    tokens = {len(a.split()) for a in sample_answers if a}
    if metric == "auto":
        metric = _natural_metric(kind, per_class, tokens)
    get_metric(metric, kind)  # raises when the metric does not fit the task
    return Task(kind, metric, classes, _answer(kind, get_metric(metric).input, per_class))


def _natural_metric(kind: str, per_class: bool, tokens: set[int]) -> str:
    if kind == "multilabel":
        return "roc_auc" if per_class else "f2"
    if kind == "binary":
        return "roc_auc"
    if kind == "ordinal":
        return "qwk"
    if per_class:
        return "log_loss"
    if len(tokens) == 1 and (k := next(iter(tokens))) > 1:
        return f"map@{k}"
    return "accuracy"


def _answer(kind: str, metric_input: str, per_class: bool) -> str:
    if metric_input == "ranking":
        return "top_k"
    if kind == "multilabel":
        return "columns" if per_class else "tags"
    if per_class:
        return "probs"
    if kind == "binary" and metric_input == "scores":
        return "positive_prob"
    return "label"


def encode_labels(task: Task, labels: list[str]) -> np.ndarray:
    """Class indices (N,) int64, or for multilabel a 0/1 matrix (N, K) float32 in `task.classes` order."""
    index = {c: i for i, c in enumerate(task.classes)}
    if not task.multilabel:
        return np.array([index[label] for label in labels], dtype=np.int64)
    out = np.zeros((len(labels), len(task.classes)), np.float32)
    for i, label in enumerate(labels):
        out[i, [index[t] for t in split_tags(label)]] = 1.0
    return out


def task_of(params: Params, competition: Competition) -> Task:
    """The competition's task under `params.task` and `params.metric`."""
    columns, answers = read_sample_shape(competition.sample_submission)
    return resolve_task(
        task=params.task, metric=params.metric, labels=competition.train_labels, sample_columns=columns,
        sample_answers=answers, from_columns=bool(competition.label_columns),
    )  # fmt: skip
