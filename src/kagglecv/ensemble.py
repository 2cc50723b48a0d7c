"""Blend weights for several experiments' out-of-fold probabilities, fit and scored out of fold.

Three ways to weight M members' probabilities (M, N, K): Caruana et al.'s (2004) greedy forward
selection with replacement on the competition's metric (`greedy_weights`); the non-negative weighted
average, summing to 1, with the lowest log loss (`log_loss_weights`, scipy's SLSQP); and non-negative
weights on the log-probabilities, their sum free, with the lowest log loss (`logit_weights`: a
weighted geometric mean that also calibrates the blend's confidence). `nested_blend` fits the
weights for each fold on the other folds' rows only, so the blended out-of-fold probabilities score
the blend as it would do on unseen images, not its in-sample optimum.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy.optimize import minimize
from sklearn.metrics import accuracy_score, log_loss

Fit = Callable[[np.ndarray, np.ndarray], np.ndarray]  # (members (M, N, K), labels (N,)) -> weights (M,)
METHODS = ("greedy", "weights", "logit")
GREEDY_ROUNDS = 50  # members added (with replacement): weights in steps of 1/50 at the finest
PROB_EPS = 1e-15  # as sklearn's log loss clips


def competition_metric(sample_kind: str) -> str:
    """The metric a blend is chosen on: the leaderboard's, log loss for a probability submission, else accuracy."""
    return "log_loss" if sample_kind == "probs" else "accuracy"


def blend_probs(members: np.ndarray, weights: np.ndarray, method: str = "weights") -> np.ndarray:
    """The blend (N, K) of `members` (M, N, K): their weighted average, or for `logit` their pooled log-probabilities."""
    return pool_logits(members, weights) if method == "logit" else np.tensordot(weights, members, axes=1)


def score_probs(probs: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Accuracy and log loss of probabilities (N, K) against class indices (N,)."""
    probs = probs / probs.sum(1, keepdims=True)
    return {
        "accuracy": round(float(accuracy_score(labels, probs.argmax(1))), 6),
        "log_loss": round(float(log_loss(labels, probs, labels=np.arange(probs.shape[1]))), 6),
    }


def rank_probs(probs: np.ndarray, labels: np.ndarray, metric: str) -> tuple[float, float]:
    """Lower is better: (log loss, log loss); or (error rate, log loss), ties on `metric` broken by log loss."""
    scores = score_probs(probs, labels)
    return (scores["log_loss"] if metric == "log_loss" else 1 - scores["accuracy"]), scores["log_loss"]


def greedy_weights(members: np.ndarray, labels: np.ndarray, *, metric: str, rounds: int = GREEDY_ROUNDS) -> np.ndarray:
    """Caruana's ensemble selection: add, `rounds` times, the member (repeats allowed) that most improves
    `metric` of the running average; the weights are the counts of the best prefix."""
    counts, total = np.zeros(len(members)), np.zeros(members.shape[1:])
    best, best_counts = (np.inf, np.inf), None
    for added in range(1, rounds + 1):
        trials = [rank_probs((total + m) / added, labels, metric) for m in members]
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


def log_probs(members: np.ndarray) -> np.ndarray:
    return np.log(np.clip(members, PROB_EPS, None))


def pool_logits(members: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """The softmax of the weighted sum of log-probabilities (N, K): a weighted geometric mean, sharpened
    (weights summing above 1) or softened (below 1)."""
    logits = np.tensordot(weights, log_probs(members), axes=1)
    logits -= logits.max(1, keepdims=True)
    probs = np.exp(logits)
    return probs / probs.sum(1, keepdims=True)


def logit_weights(members: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Non-negative weights, their sum free (it calibrates the blend's confidence), whose `pool_logits`
    has the lowest log loss: a convex problem, solved by scipy's L-BFGS-B."""
    logs = log_probs(members)  # (M, N, K)
    true = logs[:, np.arange(members.shape[1]), labels]  # (M, N)

    def loss(w: np.ndarray) -> tuple[float, np.ndarray]:
        p = pool_logits(members, w)
        expected = np.einsum("nk,mnk->mn", p, logs)  # each member's log-probability averaged under the blend
        return -float(np.log(np.clip(p[np.arange(len(labels)), labels], PROB_EPS, None)).mean()), (expected - true).mean(1)

    m = len(members)
    found = minimize(loss, np.full(m, 1 / m), jac=True, method="L-BFGS-B", bounds=[(0.0, None)] * m)
    return found.x


def make_fit(method: str, metric: str) -> Fit:
    """The weight finder called `method` (one of `METHODS`)."""
    if method == "greedy":
        return lambda members, labels: greedy_weights(members, labels, metric=metric)
    if method == "weights":
        return log_loss_weights
    if method == "logit":
        return logit_weights
    raise ValueError(f"unknown blend method {method!r}; choose one of {', '.join(METHODS)}")


def nested_blend(
    members: np.ndarray, labels: np.ndarray, folds: np.ndarray, fit: Fit, method: str = "weights"
) -> tuple[np.ndarray, dict]:
    """Blended out-of-fold probabilities (N, K), each fold's rows blended with weights fit on the other
    folds' rows; and those weights per fold. Needs at least two folds."""
    blended = np.zeros(members.shape[1:])
    per_fold = {}
    for fold in np.unique(folds):
        held = folds == fold
        weights = fit(members[:, ~held], labels[~held])
        blended[held] = blend_probs(members[:, held], weights, method)
        per_fold[int(fold)] = weights
    return blended, per_fold
