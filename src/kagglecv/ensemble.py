"""Blend weights for several experiments' out-of-fold probabilities, fit and scored out of fold.

Two ways to weight M members' probabilities (M, N, K): Caruana et al.'s (2004) greedy forward
selection with replacement on the competition's metric (`greedy_weights`), and the non-negative
weighted average, summing to 1, with the lowest log loss (`log_loss_weights`, scipy's SLSQP).
`nested_blend` fits the weights for each fold on the other folds' rows only, so the blended
out-of-fold probabilities score the blend as it would do on unseen images, not its in-sample optimum.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy.optimize import minimize
from sklearn.metrics import accuracy_score, log_loss

Fit = Callable[[np.ndarray, np.ndarray], np.ndarray]  # (members (M, N, K), labels (N,)) -> weights (M,)
METHODS = ("greedy", "weights")
GREEDY_ROUNDS = 50  # members added (with replacement): weights in steps of 1/50 at the finest
PROB_EPS = 1e-15  # as sklearn's log loss clips


def competition_metric(sample_kind: str) -> str:
    """The metric a blend is chosen on: the leaderboard's, log loss for a probability submission, else accuracy."""
    return "log_loss" if sample_kind == "probs" else "accuracy"


def blend_probs(members: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """The weighted average (N, K) of `members` (M, N, K)."""
    return np.tensordot(weights, members, axes=1)


def score_probs(probs: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Accuracy and log loss of probabilities (N, K) against class indices (N,)."""
    probs = probs / probs.sum(1, keepdims=True)
    return {
        "accuracy": round(float(accuracy_score(labels, probs.argmax(1))), 6),
        "log_loss": round(float(log_loss(labels, probs, labels=np.arange(probs.shape[1]))), 6),
    }


def _ranking(metric: str) -> Callable[[np.ndarray, np.ndarray], tuple[float, float]]:
    """Lower is better: log loss; or the error rate, ties broken by log loss."""

    def rank(probs: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
        scores = score_probs(probs, labels)
        first = scores["log_loss"] if metric == "log_loss" else 1 - scores["accuracy"]
        return first, scores["log_loss"]

    return rank


def greedy_weights(members: np.ndarray, labels: np.ndarray, *, metric: str, rounds: int = GREEDY_ROUNDS) -> np.ndarray:
    """Caruana's ensemble selection: add, `rounds` times, the member (repeats allowed) that most improves
    `metric` of the running average; the weights are the counts of the best prefix."""
    rank = _ranking(metric)
    counts, total = np.zeros(len(members)), np.zeros(members.shape[1:])
    best, best_counts = (np.inf, np.inf), None
    for added in range(1, rounds + 1):
        trials = [rank((total + m) / added, labels) for m in members]
        pick = min(range(len(members)), key=trials.__getitem__)
        counts[pick] += 1
        total += members[pick]
        if trials[pick] < best:
            best, best_counts = trials[pick], counts.copy()
    return best_counts / best_counts.sum()


def log_loss_weights(members: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Non-negative weights summing to 1 whose average of `members` has the lowest log loss."""
    true = members[:, np.arange(members.shape[1]), labels] / members.sum(2)  # (M, N): each member's p(true class)

    def loss(w: np.ndarray) -> tuple[float, np.ndarray]:
        p = np.clip(w @ true, PROB_EPS, None)
        return -float(np.log(p).mean()), -(true / p).mean(1)

    m = len(members)
    found = minimize(loss, np.full(m, 1 / m), jac=True, method="SLSQP", bounds=[(0.0, 1.0)] * m, options={"ftol": 1e-10},
                     constraints=[{"type": "eq", "fun": lambda w: w.sum() - 1, "jac": lambda w: np.ones(m)}])  # fmt: skip
    weights = np.clip(found.x, 0.0, None)
    return weights / weights.sum()


def make_fit(method: str, metric: str) -> Fit:
    """The weight finder called `method` (one of `METHODS`)."""
    if method == "greedy":
        return lambda members, labels: greedy_weights(members, labels, metric=metric)
    if method == "weights":
        return log_loss_weights
    raise ValueError(f"unknown blend method {method!r}; choose one of {', '.join(METHODS)}")


def nested_blend(members: np.ndarray, labels: np.ndarray, folds: np.ndarray, fit: Fit) -> tuple[np.ndarray, dict]:
    """Blended out-of-fold probabilities (N, K), each fold's rows blended with weights fit on the other
    folds' rows; and those weights per fold. Needs at least two folds."""
    blended = np.zeros(members.shape[1:])
    per_fold = {}
    for fold in np.unique(folds):
        held = folds == fold
        weights = fit(members[:, ~held], labels[~held])
        blended[held] = blend_probs(members[:, held], weights)
        per_fold[int(fold)] = weights
    return blended, per_fold
