"""The metric registry, decision rules and thresholds tuned on out-of-fold predictions, against hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest

from kagglecv.metrics import (
    MetricError,
    cross_fitted_thresholds,
    cross_validate,
    decide,
    get_metric,
    map_at_k,
    needs_thresholds,
    score_answers,
    score_probs,
    tune_thresholds,
)


def test_map_at_k_is_the_mean_reciprocal_rank_of_the_true_class_within_k() -> None:
    truth = np.array([0, 1, 2, 3])
    ranked = np.array([[0, 1, 2], [2, 1, 0], [1, 0, 2], [0, 1, 2]])  # ranks 1, 2, 3, absent
    assert map_at_k(truth, ranked) == pytest.approx((1 + 1 / 2 + 1 / 3 + 0) / 4)
    assert score_probs("map@1", "multiclass", np.array([1, 0]), np.array([[0.2, 0.8], [0.6, 0.4]])) == 1.0


def test_f2_is_averaged_over_images_as_planet_scores_it() -> None:
    truth = np.array([[1, 1, 0], [0, 0, 1]])
    decided = np.array([[1, 0, 0], [0, 1, 1]])
    # image 1: precision 1, recall 1/2 -> 5PR/(4P+R) = 2.5/4.5; image 2: precision 1/2, recall 1 -> 2.5/3
    assert score_answers("f2", truth, decided, 3) == pytest.approx((2.5 / 4.5 + 2.5 / 3) / 2)


def test_roc_auc_of_several_labels_is_the_mean_over_columns_holding_both_answers() -> None:
    truth = np.array([[1, 0, 1], [0, 1, 1], [1, 1, 1], [0, 0, 1]])
    probs = np.array([[0.9, 0.2, 0.5], [0.1, 0.3, 0.5], [0.8, 0.9, 0.5], [0.7, 0.1, 0.5]])
    # column 0: 3 of 4 positive-negative pairs ordered (0.7 > 0.1 but < 0.8 and 0.9): AUC 1.0 (0.8, 0.9 > 0.7, 0.1);
    # column 1: positives 0.3, 0.9 against 0.2, 0.1: AUC 1.0; column 2 has no negative and is left out
    assert score_answers("roc_auc", truth, probs, 3) == pytest.approx(1.0)
    probs[3, 0] = 0.85  # now one of column 0's four pairs is misordered (0.85 > 0.8)
    assert score_answers("roc_auc", truth, probs, 3) == pytest.approx((0.75 + 1.0) / 2)


def test_decisions_per_task() -> None:
    probs = np.array([[0.7, 0.3], [0.4, 0.6]])
    assert decide("multiclass", probs).tolist() == [0, 1]
    assert decide("binary", probs, [0.25]).tolist() == [1, 1]
    assert decide("multilabel", probs, [0.5, 0.5]).tolist() == [[1, 0], [0, 1]]
    assert decide("multilabel", probs, [0.8, 0.8]).tolist() == [[1, 0], [0, 1]]  # none passes: the likeliest
    grades = np.array([[1.0, 0, 0], [0.2, 0.6, 0.2], [0, 0.3, 0.7]])  # expected grades 0, 1, 1.7
    assert decide("ordinal", grades).tolist() == [0, 1, 2]  # cut points 0.5, 1.5
    assert decide("ordinal", grades, [0.5, 1.8]).tolist() == [0, 1, 1]


def test_unknown_or_unfitting_metric_is_named_with_the_choices() -> None:
    with pytest.raises(MetricError, match=r"metric: unknown metric 'auc'; choose one of auto, accuracy, .*roc_auc"):
        get_metric("auc")
    with pytest.raises(MetricError, match="metric: f2 does not score a multiclass task; it fits multilabel, binary"):
        get_metric("f2", "multiclass")
    assert get_metric("map@5").name == "map@5" and not get_metric("log_loss").higher_is_better
    assert needs_thresholds("qwk", "ordinal") and not needs_thresholds("accuracy", "multiclass")
    assert not needs_thresholds("roc_auc", "binary")


def test_tuned_thresholds_find_a_label_whose_scores_run_low() -> None:
    rng = np.random.default_rng(0)
    truth = (rng.random((60, 2)) < 0.5).astype(int)
    truth[:, 1] = 1  # every image holds label 1, so a perfect decision scores F2 1 on every image
    probs = np.where(truth == 1, 0.35, 0.25) + rng.normal(0, 0.01, truth.shape)  # column 0: every score below 0.5
    probs[:, 1] = 0.9
    tuned = tune_thresholds("f2", "multilabel", truth, probs)
    assert 0.26 <= tuned[0] <= 0.34
    assert score_probs("f2", "multilabel", truth, probs, tuned) == pytest.approx(1.0)
    assert score_probs("f2", "multilabel", truth, probs) < 0.9  # 0.5 predicts no label 0 at all


def test_kappa_cut_points_are_tuned_on_the_expected_grade() -> None:
    truth = np.repeat([0, 1, 2], 30)
    probs = np.zeros((90, 3))
    probs[:, 0], probs[:, 2] = 1.0 - truth / 2 * 0.7, truth / 2 * 0.7  # expected grades 0, 0.7, 1.4
    assert score_probs("qwk", "ordinal", truth, probs) < 1.0  # grade 2 (1.4) falls below the 1.5 cut
    tuned = tune_thresholds("qwk", "ordinal", truth, probs)
    assert score_probs("qwk", "ordinal", truth, probs, tuned) == pytest.approx(1.0)


def test_a_folds_thresholds_are_tuned_without_it() -> None:
    rng = np.random.default_rng(1)
    truth = (rng.random((60, 2)) < 0.4).astype(int)
    probs = np.clip(truth * 0.4 + rng.random((60, 2)) * 0.6, 0, 1)
    fold_of = np.arange(60) % 3
    before = cross_fitted_thresholds("f2", "multilabel", truth, probs, fold_of)
    changed = probs.copy()
    changed[fold_of == 0] = rng.random((20, 2))  # fold 0's own predictions change ...
    after = cross_fitted_thresholds("f2", "multilabel", truth, changed, fold_of)
    assert after[0] == before[0]  # ... and its thresholds do not
    assert after[1] != before[1] or after[2] != before[2]


def test_cross_validation_reports_the_metric_first_per_fold_and_the_rule_for_the_test_set() -> None:
    rng = np.random.default_rng(2)
    truth = rng.integers(0, 4, 200)
    probs = np.eye(4)[truth] * 0.5 + rng.random((200, 4)) * 0.5
    probs /= probs.sum(1, keepdims=True)
    fold_of = np.arange(200) % 4
    cv = cross_validate("qwk", "ordinal", truth, probs, fold_of)
    assert list(cv.scores) == ["qwk", "accuracy", "macro_f1"]
    assert sorted(cv.per_fold) == ["0", "1", "2", "3"] and all("qwk" in f for f in cv.per_fold.values())
    assert len(cv.thresholds) == 3 and cv.thresholds == sorted(cv.thresholds)
    in_sample = score_probs("qwk", "ordinal", truth, probs, cv.thresholds)
    assert cv.scores["qwk"] <= in_sample + 1e-9  # thresholds tuned on the scored rows flatter the figure
    multiclass = cross_validate("accuracy", "multiclass", truth, probs, fold_of)
    assert list(multiclass.scores) == ["accuracy", "macro_f1", "log_loss"] and multiclass.thresholds == []
    assert multiclass.scores["accuracy"] == round(float((probs.argmax(1) == truth).mean()), 6)


def test_a_single_validation_fold_keeps_the_untuned_rule_for_its_cv_figure() -> None:
    truth = np.array([0, 1, 1, 0])
    probs = np.array([[0.7, 0.3], [0.6, 0.4], [0.2, 0.8], [0.9, 0.1]])
    cv = cross_validate("f2", "binary", truth, probs, np.zeros(4, int))
    assert cv.per_fold["0"]["f2"] == cv.scores["f2"] == round(5 * 1 * 0.5 / (4 * 1 + 0.5), 6)  # 0.5: recall 1/2
    assert cv.thresholds[0] <= 0.4  # tuned on the fold itself, for the test set: both positives
