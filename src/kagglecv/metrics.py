"""Competition metrics by name, the decision rules they score, and thresholds tuned on out-of-fold predictions.

A metric takes the true answers and one of three kinds of prediction: scores (probabilities:
`roc_auc`, `log_loss`), decisions (a class per image, or a 0/1 row per image for several labels:
`accuracy`, `macro_f1`, `f2`, `qwk`) or a ranking (the top k classes: `map@K`). `score_probs`
turns probabilities into what the metric needs, with `decide` applying the thresholds:

- multilabel: one threshold per label (a label is predicted when its probability reaches it; an image
  with none gets its likeliest label, as every image of these competitions has one);
- binary: one threshold on the positive class's probability;
- ordinal: K-1 cut points on the expected grade (sum over grades of grade x probability);
- multiclass: none (the most probable class).

Where a metric scores decisions of a task with thresholds (`needs_thresholds`), `tune_thresholds`
finds the thresholds that maximise it on out-of-fold probabilities (coordinate ascent over a grid).
scikit-learn computes every metric it has; MAP@k and the mean column-wise ROC AUC are written here.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from sklearn.metrics import accuracy_score, cohen_kappa_score, f1_score, fbeta_score, log_loss, roc_auc_score

from kagglecv.params import ParamsError

TASKS = ("multiclass", "multilabel", "binary", "ordinal")
_MAP_AT = re.compile(r"^map@(?P<k>[1-9]\d*)$")
PROB_EPS = 1e-15
GRID = np.round(np.arange(0.05, 0.96, 0.05), 2)  # candidate probability thresholds
PASSES = 2  # coordinate-ascent sweeps over the thresholds


class MetricError(ParamsError):
    """An unknown metric, or one that does not fit the task; the message names `metric` and the choices."""


@dataclass(frozen=True)
class Metric:
    name: str
    higher_is_better: bool
    input: str  # scores | decisions | ranking
    tasks: tuple[str, ...]  # the tasks it is defined for


def _multi_auc(truth: np.ndarray, probs: np.ndarray, num_classes: int) -> float:
    """ROC AUC: of the positive class (binary), or the mean over columns that hold both answers (several labels)."""
    if truth.ndim == 1:
        return float(roc_auc_score(truth, probs[:, 1] if probs.ndim == 2 else probs))
    both = [j for j in range(truth.shape[1]) if 0 < truth[:, j].sum() < len(truth)]
    if not both:
        raise MetricError("roc_auc: no label column holds both 0 and 1 answers; the AUC is undefined")
    return float(np.mean([roc_auc_score(truth[:, j], probs[:, j]) for j in both]))


def _log_loss(truth: np.ndarray, probs: np.ndarray, num_classes: int) -> float:
    """Multi-class log loss (scikit-learn's; rows renormalised, undoing a CSV's rounding); for several labels
    the mean binary log loss over the columns; for a single positive-class probability the binary one."""
    if truth.ndim == 2:
        q = np.clip(probs.astype(np.float64), PROB_EPS, 1 - PROB_EPS)  # in float32 1 - 1e-15 is 1
        return float(-np.mean(truth * np.log(q) + (1 - truth) * np.log(1 - q)))
    if probs.ndim == 1:
        probs = np.stack([1 - probs, probs], 1)
    probs = probs / probs.sum(1, keepdims=True)
    return float(log_loss(truth, probs, labels=np.arange(num_classes)))


def map_at_k(truth: np.ndarray, ranked: np.ndarray, num_classes: int = 0) -> float:
    """Mean average precision at k with one true class per image: 1/rank of the true class among the k
    `ranked` (N, k) classes, 0 when it is not there (Kaggle's MAP@5 for Humpback Whale Identification)."""
    hits = ranked == truth[:, None]  # (N, k): at most one True per row
    ranks = np.where(hits.any(1), hits.argmax(1) + 1, np.inf)
    return float(np.mean(1.0 / ranks))


def _f1(truth: np.ndarray, decided: np.ndarray, num_classes: int) -> float:
    """Macro F1 over every class (a class neither true nor predicted counts 0, as scikit-learn counts it)."""
    labels = None if truth.ndim == 2 else np.arange(num_classes)
    return float(f1_score(truth, decided, average="macro", labels=labels, zero_division=0))


def _f2(truth: np.ndarray, decided: np.ndarray, num_classes: int) -> float:
    average = "samples" if truth.ndim == 2 else "binary"  # Planet: F2 per image, averaged over images
    return float(fbeta_score(truth, decided, beta=2, average=average, zero_division=0))


def _qwk(truth: np.ndarray, decided: np.ndarray, num_classes: int) -> float:
    return float(cohen_kappa_score(truth, decided, weights="quadratic"))


_ALL = TASKS
METRICS: dict[str, tuple[Metric, Callable[[np.ndarray, np.ndarray], float]]] = {
    "accuracy": (Metric("accuracy", True, "decisions", _ALL), lambda t, d, k: float(accuracy_score(t, d))),
    "log_loss": (Metric("log_loss", False, "scores", _ALL), _log_loss),
    "macro_f1": (Metric("macro_f1", True, "decisions", _ALL), _f1),
    "f2": (Metric("f2", True, "decisions", ("multilabel", "binary")), _f2),
    "roc_auc": (Metric("roc_auc", True, "scores", ("multilabel", "binary")), _multi_auc),
    "qwk": (Metric("qwk", True, "decisions", ("multiclass", "binary", "ordinal")), _qwk),
    "map@K": (Metric("map@K", True, "ranking", ("multiclass",)), map_at_k),
}


def get_metric(name: str, task: str | None = None) -> Metric:
    """The metric called `name` (`map@5` for MAP@k); raises `MetricError` naming the choices, or the tasks it fits."""
    found = _MAP_AT.match(name)
    key = "map@K" if found else name
    if key not in METRICS:
        raise MetricError(f"metric: unknown metric {name!r}; choose one of auto, {', '.join(METRICS)} (e.g. map@5)")
    metric = METRICS[key][0]
    if task is not None and task not in metric.tasks:
        raise MetricError(f"metric: {name} does not score a {task} task; it fits {', '.join(metric.tasks)}")
    return Metric(name, metric.higher_is_better, metric.input, metric.tasks)


def top_k(name: str) -> int:
    """k of `map@k`."""
    return int(_MAP_AT.match(name)["k"])


def needs_thresholds(name: str, task: str) -> bool:
    """Whether `name` scores decisions that thresholds make (every task but multiclass)."""
    return get_metric(name).input == "decisions" and task != "multiclass"


def default_thresholds(task: str, num_classes: int) -> list[float]:
    """The untuned rule: 0.5 per label or on the positive class; cut points halfway between grades."""
    if task == "multilabel":
        return [0.5] * num_classes
    if task == "binary":
        return [0.5]
    if task == "ordinal":
        return [k + 0.5 for k in range(num_classes - 1)]
    return []


def decide(task: str, probs: np.ndarray, thresholds: list[float] | None = None) -> np.ndarray:
    """Decisions from probabilities (N, K): class indices (N,), or 0/1 (N, K) for multilabel."""
    t = np.asarray(thresholds if thresholds else default_thresholds(task, probs.shape[1]), float)
    if task == "multilabel":
        decided = (probs >= t).astype(np.int64)
        decided[np.arange(len(probs)), probs.argmax(1)] |= decided.sum(1) == 0  # every image its likeliest label at least
        return decided
    if task == "binary":
        return (probs[:, 1] >= t[0]).astype(np.int64)
    if task == "ordinal":
        expected = probs @ np.arange(probs.shape[1])  # (N,) expected grade
        return np.searchsorted(np.sort(t), expected, side="right").astype(np.int64)
    return probs.argmax(1)


def rank_classes(probs: np.ndarray, k: int) -> np.ndarray:
    """The k most probable classes per image, most probable first: (N, k) indices."""
    return np.argsort(-probs, axis=1, kind="stable")[:, :k]


def score_answers(name: str, truth: np.ndarray, answers: np.ndarray, num_classes: int) -> float:
    """`name` of answers already in the metric's input form (scores, decisions or ranked classes)."""
    key = "map@K" if _MAP_AT.match(name) else name
    return METRICS[key][1](truth, answers, num_classes)


def score_probs(name: str, task: str, truth: np.ndarray, probs: np.ndarray, thresholds: list[float] | None = None) -> float:
    """`name` of probabilities (N, K) against the truth (class indices (N,), or 0/1 (N, K) for multilabel)."""
    metric, k = get_metric(name, task), probs.shape[1]
    if metric.input == "scores":
        return score_answers(name, truth, probs, k)
    if metric.input == "ranking":
        return score_answers(name, truth, rank_classes(probs, top_k(name)), k)
    return score_answers(name, truth, decide(task, probs, thresholds), k)


def tune_thresholds(name: str, task: str, truth: np.ndarray, probs: np.ndarray) -> list[float]:
    """The thresholds that maximise `name` on (truth, probs), by coordinate ascent from the default rule;
    the default itself when the metric needs none."""
    best = default_thresholds(task, probs.shape[1])
    if not needs_thresholds(name, task):
        return best
    grid = GRID if task != "ordinal" else None
    best_value = score_probs(name, task, truth, probs, best)
    for _ in range(PASSES):
        for j in range(len(best)):
            candidates = grid if grid is not None else np.round(np.linspace(j + 0.05, j + 0.95, 19), 2)
            for value in candidates:
                trial = best.copy()
                trial[j] = float(value)
                got = score_probs(name, task, truth, probs, trial)
                if got > best_value + 1e-12:
                    best, best_value = trial, got
    return best


def cross_fitted_thresholds(
    name: str, task: str, truth: np.ndarray, probs: np.ndarray, fold_of: np.ndarray
) -> dict[int, list[float]]:
    """Per fold k, the thresholds tuned on every other fold's out-of-fold probabilities: applied to fold k,
    they give a CV figure that no threshold has seen. A single validation fold (a holdout split) has no
    other fold to tune on and keeps the untuned rule."""
    out = {}
    for k in np.unique(fold_of):
        others = fold_of != k
        out[int(k)] = tune_thresholds(name, task, truth[others], probs[others]) if others.any() else \
            default_thresholds(task, probs.shape[1])
    return out


REPORTED = {  # the CV figures per task besides the competition's metric, which comes first
    "multiclass": ("accuracy", "macro_f1", "log_loss"),
    "binary": ("roc_auc", "accuracy", "log_loss"),
    "ordinal": ("qwk", "accuracy", "macro_f1"),
    "multilabel": ("f2", "macro_f1", "roc_auc", "log_loss"),
}


@dataclass(frozen=True)
class CrossValidation:
    scores: dict[str, float]  # metric -> the pooled out-of-fold figure, the competition's metric first
    per_fold: dict[str, dict[str, float]]  # fold -> metric -> figure
    thresholds: list[float]  # tuned on every fold: the rule the test predictions use
    decisions: np.ndarray  # each out-of-fold prediction decided with its fold's thresholds


def cross_validate(name: str, task: str, truth: np.ndarray, probs: np.ndarray, fold_of: np.ndarray) -> CrossValidation:
    """Score out-of-fold probabilities by `name` and the task's other `REPORTED` metrics. Each fold is decided
    with thresholds tuned on the other folds (`cross_fitted_thresholds`), so the figure is one a test set
    would see; every decision metric uses the thresholds tuned for `name`. Figures rounded to 6 places."""
    fold_thresholds = cross_fitted_thresholds(name, task, truth, probs, fold_of)
    decisions = np.zeros((len(truth), probs.shape[1]) if task == "multilabel" else len(truth), np.int64)
    for k, t in fold_thresholds.items():
        decisions[fold_of == k] = decide(task, probs[fold_of == k], t)
    names = [name] + [m for m in REPORTED[task] if m != name and task in get_metric(m).tasks]

    def scores(rows: np.ndarray) -> dict[str, float]:
        out = {}
        for m in names:
            kind = get_metric(m).input
            answers = decisions[rows] if kind == "decisions" else probs[rows]
            if kind == "ranking":
                answers = rank_classes(probs[rows], top_k(m))
            try:
                out[m] = round(score_answers(m, truth[rows], answers, probs.shape[1]), 6)
            except (MetricError, ValueError):  # e.g. an AUC of a fold holding one answer only
                out[m] = float("nan") if m == name else None
        return {m: v for m, v in out.items() if v is not None}

    per_fold = {str(k): scores(fold_of == k) for k in fold_thresholds}
    thresholds = tune_thresholds(name, task, truth, probs)
    return CrossValidation(scores(np.ones(len(truth), bool)), per_fold, thresholds, decisions)
