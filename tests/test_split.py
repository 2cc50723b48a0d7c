import pytest

from kagglecv.data import CompetitionError
from kagglecv.ingest import read_competition
from kagglecv.stages.split import make_folds


def test_folds_are_complete_stratified_and_deterministic(digits_raw):
    comp = read_competition(digits_raw)
    folds = make_folds(comp.train_ids, comp.train_labels, n_folds=5, seed=42)
    assert folds["id"].tolist() == comp.train_ids  # every row once, in order
    assert sorted(folds["fold"].unique()) == [0, 1, 2, 3, 4]
    per_class = folds.groupby(["label", "fold"]).size().unstack()
    assert (per_class.max(axis=1) - per_class.min(axis=1)).max() <= 1  # stratified
    again = make_folds(comp.train_ids, comp.train_labels, n_folds=5, seed=42)
    assert folds.equals(again)
    other = make_folds(comp.train_ids, comp.train_labels, n_folds=5, seed=7)
    assert not folds["fold"].equals(other["fold"])


def test_class_smaller_than_n_folds_is_refused():
    with pytest.raises(CompetitionError, match=r"n_folds: 3 folds need at least 3 images per class.*'b' \(2\)"):
        make_folds([str(i) for i in range(8)], ["a"] * 6 + ["b"] * 2, n_folds=3, seed=0)
