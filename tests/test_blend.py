"""Blending experiments: weights with a known optimum, fit out of fold; revisions read through DVC; refusals."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from kagglecv.blend import BlendError, run
from kagglecv.ensemble import greedy_weights, log_loss_weights, logit_weights, nested_blend, pool_logits, score_probs
from kagglecv.ingest import read_competition
from kagglecv.paths import Paths
from kagglecv.revisions import RevisionError
from tests.conftest import REPO, make_project
from tests.test_dvc_repro import sh

OPTIMUM = 11 / 12  # see two_members


def two_members(n: int, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Members (2, n, k) and labels (n,): on 3 rows in 4 member A gives the true class 0.8 and B 0.2, on the
    4th the other way round. Log loss only sees p(true) = 0.2 + 0.6 w for A's weight w on the first rows and
    0.8 - 0.6 w on the others: -(3/4) 0.6 / (0.2 + 0.6 w) + (1/4) 0.6 / (0.8 - 0.6 w) = 0 at w = 11/12."""
    labels = np.arange(n) % k
    members = np.zeros((2, n, k))
    a_true = np.where(np.arange(n) % 4 == 3, 0.2, 0.8)
    for m, true in enumerate((a_true, 1.0 - a_true)):
        members[m] = ((1 - true) / (k - 1))[:, None]
        members[m, np.arange(n), labels] = true
    return members, labels


def test_log_loss_weights_find_the_known_optimum() -> None:
    members, labels = two_members(400)
    assert log_loss_weights(members, labels) == pytest.approx([OPTIMUM, 1 - OPTIMUM], abs=1e-4)


def test_greedy_selection_reaches_the_optimum_to_its_step() -> None:
    members, labels = two_members(400)
    weights = greedy_weights(members, labels, metric="log_loss", rounds=24)
    assert weights == pytest.approx([22 / 24, 2 / 24])  # the grid point 11/12 itself
    assert weights.sum() == pytest.approx(1.0)


def test_greedy_on_accuracy_breaks_ties_by_log_loss() -> None:
    members, labels = two_members(400)  # both members rank the true class first everywhere: accuracy 1 always
    weights = greedy_weights(members, labels, metric="accuracy", rounds=24)
    np.testing.assert_allclose(weights, greedy_weights(members, labels, metric="log_loss", rounds=24))
    members[1, :100] = np.roll(members[1, :100], 1, axis=1)  # B now wrong on 100 rows: accuracy decides first
    assert greedy_weights(members, labels, metric="accuracy", rounds=24) == pytest.approx([1.0, 0.0])


def test_logit_pooling_has_the_right_gradient_and_beats_every_member_in_sample() -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, 300)
    logits = rng.normal(size=(3, 300, 4)) + 1.5 * np.eye(4)[labels]  # three noisy, underconfident members
    members = np.exp(logits) / np.exp(logits).sum(2, keepdims=True)
    true = np.log(members[:, np.arange(300), labels])

    def loss(w: np.ndarray) -> float:
        return score_probs(pool_logits(members, w), labels)["log_loss"]

    weights = logit_weights(members, labels)
    assert (weights >= 0).all() and weights.sum() > 1  # sharpened: the members are underconfident together
    assert loss(weights) < min(-true.mean(1)) - 0.05
    for direction in np.eye(3):  # no small step along a weight lowers the loss: an optimum (up to the 6 decimals)
        assert loss(weights + 1e-3 * direction) >= loss(weights) - 1e-6


def test_nested_blend_fits_each_fold_on_the_other_folds_only() -> None:
    members, labels = two_members(120)
    folds = np.arange(120) % 3
    seen: list[np.ndarray] = []

    def fit(m: np.ndarray, y: np.ndarray) -> np.ndarray:
        seen.append(y)
        return np.array([0.25, 0.75]) if len(seen) == 2 else np.array([1.0, 0.0])

    blended, per_fold = nested_blend(members, labels, folds, fit)
    assert [len(y) for y in seen] == [80, 80, 80]
    assert set(per_fold) == {0, 1, 2}
    np.testing.assert_allclose(blended[folds == 1], 0.25 * members[0, folds == 1] + 0.75 * members[1, folds == 1])
    np.testing.assert_allclose(blended[folds != 1], members[0, folds != 1])


def git(cwd: Path, *args: str) -> None:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t"}  # fmt: skip
    subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True)


def write_predictions(root: Path, members: np.ndarray, index: int, folds: np.ndarray, seed: int) -> None:
    """Member `index`'s oof.csv over the competition's training ids and random test probabilities."""
    competition = read_competition(root / "data/raw", check_images=False)
    classes = competition.classes
    n = len(competition.train_ids)
    oof = pd.DataFrame(members[index, :n], columns=classes)
    oof.insert(0, "fold", folds[:n])
    oof.insert(0, "label", [classes[i % len(classes)] for i in range(n)])
    oof.insert(0, "id", competition.train_ids)
    (root / "predictions").mkdir(exist_ok=True)
    oof.to_csv(root / "predictions/oof.csv", index=False, float_format="%.6g")
    test = pd.DataFrame(np.random.default_rng(seed).dirichlet(np.ones(len(classes)), len(competition.test_ids)),
                        columns=classes)  # fmt: skip
    test.insert(0, "id", competition.test_ids)
    test.to_csv(root / "predictions/test_probs.csv", index=False, float_format="%.6g")


@pytest.fixture
def repo(tmp_path: Path, digits_raw: Path) -> Path:
    """A git + DVC repository with the digits competition; tag `a` holds member A's predictions, tag `b`
    member B's (the labels are i mod 10, as `two_members` draws them), the workspace B's too."""
    root = tmp_path / "repo"
    shutil.copytree(digits_raw, root / "data/raw")
    shutil.copy(REPO / "params.yaml", root / "params.yaml")
    git(root, "init", "-q")
    subprocess.run(["dvc", "init", "-q"], cwd=root, check=True, capture_output=True)
    n = len(read_competition(root / "data/raw", check_images=False).train_ids)
    members, _ = two_members(n)
    folds = np.arange(n) % 3
    for index, tag in enumerate(("a", "b")):
        write_predictions(root, members, index, folds, seed=index)
        git(root, "add", "-A")
        git(root, "commit", "-qm", tag)
        git(root, "tag", tag)
    return root


def test_blend_of_two_revisions_finds_the_optimum_and_writes_a_checked_submission(repo: Path) -> None:
    paths = Paths(repo)
    figures = run(["a", "b"], paths, method="weights")
    assert figures["weights"]["a"] == pytest.approx(OPTIMUM, abs=2e-3)
    members = figures["members"]
    assert figures["cv"]["log_loss"] < min(members["a"]["cv"]["log_loss"], members["b"]["cv"]["log_loss"])
    assert figures["leaderboard"].keys() == {"accuracy"}  # digits ships a solution
    auto = run(["a", "b"], paths)  # every method tried out of fold, the best on accuracy, ties by log loss
    assert set(auto["methods"]) == {"greedy", "weights", "logit"}
    best = min(auto["methods"].values(), key=lambda m: (-m["cv"]["accuracy"], m["cv"]["log_loss"]))
    assert auto["cv"] == best["cv"] == auto["methods"][auto["method"]]["cv"]
    run(["a", "b"], paths, method="weights")  # the files the rest checks
    written = json.loads(paths.blend_metrics.read_text())["blend"]
    assert written["cv"] == figures["cv"] and set(written["weights"]) == {"a", "b"}
    sample = pd.read_csv(repo / "data/raw/sample_submission.csv", dtype=str)
    submission = pd.read_csv(paths.blend_submission, dtype=str)
    assert list(submission.columns) == list(sample.columns)
    assert submission.iloc[:, 0].tolist() == sample.iloc[:, 0].tolist()
    blend_oof = pd.read_csv(paths.blend_oof, dtype={"id": str, "label": str})
    oof_a = pd.read_csv(repo / "predictions/oof.csv", dtype={"id": str, "label": str})
    assert blend_oof[["id", "label", "fold"]].equals(oof_a[["id", "label", "fold"]])
    assert score_probs(blend_oof.iloc[:, 3:].to_numpy(), np.arange(len(blend_oof)) % 10) == figures["cv"]


def test_blend_refuses_members_made_on_other_folds_and_writes_nothing(repo: Path) -> None:
    oof = pd.read_csv(repo / "predictions/oof.csv", dtype={"id": str, "label": str})
    oof["fold"] = (oof["fold"] + 1) % 3  # the workspace: another split
    oof.to_csv(repo / "predictions/oof.csv", index=False)
    with pytest.raises(BlendError, match=r"^workspace differs from a in their folds .*nothing was written"):
        run(["a", "b", "workspace"], Paths(repo))
    paths = Paths(repo)
    assert not paths.blend_submission.exists() and not paths.blend_oof.exists() and not paths.blend_metrics.exists()


def test_blend_names_an_unknown_revision(repo: Path) -> None:
    with pytest.raises(RevisionError, match="'nope' is no revision.*dvc exp show"):
        run(["a", "nope"], Paths(repo))
    with pytest.raises(BlendError, match="at least two different"):
        run(["a", "a"], Paths(repo))


@pytest.mark.slow
def test_blend_of_dvc_experiments_by_name(tmp_path: Path) -> None:
    """The real `dvc repro` and `dvc exp run -S seeds=[7]` (the same folds, another seed), blended by name."""
    project = make_project(tmp_path / "project", {"n_folds": 2, "epochs": 1, "model": "softmax_regression", "img_size": 8})
    sh(project, "dvc", "repro", "-q")
    sh(project, "git", "add", "-A")
    sh(project, "git", "commit", "-qm", "base")
    sh(project, "dvc", "exp", "run", "-q", "-n", "second-seed", "-S", "seeds=[7]")
    sh(project, sys.executable, "-m", "kagglecv.blend", "HEAD", "second-seed")
    figures = json.loads((project / "metrics/blend.json").read_text())["blend"]
    assert list(figures["weights"]) == ["HEAD", "second-seed"] and min(figures["weights"].values()) >= 0
    assert figures["cv"] == figures["methods"][figures["method"]]["cv"]
    assert figures["members"]["HEAD"]["cv"] != figures["members"]["second-seed"]["cv"]
    assert set(figures["leaderboard"]) == {"accuracy"}
    assert (project / "submissions/blend.csv").exists()
