"""`python -m kagglecv.blend EXP [EXP ...]`: one submission from several experiments, weighted on
their out-of-fold predictions.

Each EXP is anything DVC resolves to a revision (an experiment name from `dvc exp show`, a branch,
a tag, a commit) or `workspace`. Its `predictions/oof.csv` and `predictions/test_probs.csv` are
read from the DVC cache for that revision, nothing is retrained. Every member must have been made
on the same folds (the id, label and fold columns of `oof.csv`, written from `data/folds.csv`), the
same classes and the same test ids; otherwise the blend stops, naming the experiments that differ,
and writes nothing.

The weights (`--method greedy`: Caruana's greedy selection with replacement on the competition's
metric; `weights`: the non-negative weighted average with the lowest log loss; `logit`: non-negative
weights on the log-probabilities with the lowest log loss; see `kagglecv.ensemble`) are fit out of
fold: fold k's rows are blended with weights fit on the other folds' rows, so `blend.cv.*` estimates
the blend on unseen images. `auto` (the default) tries each and keeps the best out of fold on the
competition's metric. The submission uses the weights
fit on every out-of-fold row. Reads the workspace's `data/raw/` (sample submission, solution) and
`params.yaml` (`data.layout`). Writes `submissions/blend.csv` (checked like `predict`'s
submission), `predictions/blend_oof.csv` (as `oof.csv`) and `metrics/blend.json`
(`blend.cv.accuracy`, `blend.cv.log_loss`, `blend.weights` by experiment, `blend.leaderboard.*`
where a solution exists, and `blend.members.<EXP>` with each member's own figures). Not a DVC stage.
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from kagglecv.artifacts import write_csv, write_json, write_text
from kagglecv.data import TRAIN_ONLY_FOLD, CompetitionError
from kagglecv.ensemble import (
    METHODS,
    blend_probs,
    competition_metric,
    make_fit,
    nested_blend,
    rank_probs,
    score_probs,
)
from kagglecv.ingest import read_competition
from kagglecv.params import ParamsError, load_params
from kagglecv.paths import Paths
from kagglecv.revisions import RevisionError, read_csv_at
from kagglecv.runtime import main_of
from kagglecv.scoring import score_submission
from kagglecv.tasks import task_of
from kagglecv.submission import (
    SubmissionError,
    make_submission,
    read_sample_submission,
    render_submission,
)

log = logging.getLogger("kagglecv.blend")

FOLD_COLUMNS = ["id", "label", "fold"]


class BlendError(ValueError):
    """The experiments cannot be blended; the message names them and what differs."""


@dataclass(frozen=True)
class Member:
    name: str
    oof: pd.DataFrame  # id, label, fold, then one probability column per class
    test: pd.DataFrame  # id, then one probability column per class


def read_member(paths: Paths, name: str) -> Member:
    """Experiment `name`'s out-of-fold and test probabilities, from the DVC cache."""
    relative = Paths()  # the files' paths inside any revision
    oof = read_csv_at(paths.root, name, str(relative.oof), dtype={"id": str, "label": str}, keep_default_na=False)
    test = read_csv_at(paths.root, name, str(relative.test_probs), dtype={"id": str}, keep_default_na=False)
    return Member(name, oof, test)


def check_members(members: list[Member]) -> None:
    """Refuse, naming the experiments, when any differs from the first in folds, classes or test ids."""
    first = members[0]
    checks = (
        ("classes (the probability columns of predictions/oof.csv and test_probs.csv)",
         lambda m: (list(m.oof.columns[3:]), list(m.test.columns[1:]))),
        ("folds (the id, label and fold columns of predictions/oof.csv: another data/folds.csv)",
         lambda m: m.oof[FOLD_COLUMNS].to_numpy().tolist()),
        ("test ids (predictions/test_probs.csv)", lambda m: m.test["id"].tolist()),
    )  # fmt: skip
    for what, key in checks:
        differ = [m.name for m in members[1:] if key(m) != key(first)]
        if differ:
            raise BlendError(
                f"{', '.join(differ)} differ{'s' if len(differ) == 1 else ''} from {first.name} in their {what}: "
                "blend only experiments made on one split of the same competition (same seed, n_folds and data); "
                "nothing was written"
            )


@dataclass(frozen=True)
class Stacked:
    """The members' probabilities on the rows a fold validated (N) and on the test set (T), as arrays."""

    classes: list[str]
    scored: np.ndarray  # bool, one per oof.csv row: validated by a fold (a holdout split's training rows are not)
    folds: np.ndarray  # (N,) each scored row's fold
    labels: np.ndarray  # (N,) class indices
    oofs: np.ndarray  # (M, N, K), rows summing to 1
    tests: np.ndarray  # (M, T, K), rows summing to 1


def stack_members(members: list[Member]) -> Stacked:
    first = members[0]
    classes = list(first.oof.columns[3:])
    scored = (first.oof["fold"] != TRAIN_ONLY_FOLD).to_numpy()
    folds = first.oof["fold"].to_numpy()[scored]
    if len(np.unique(folds)) < 2:
        raise BlendError("the members have one validation fold: blend weights need other folds to be fit out of fold")
    labels = np.array([classes.index(label) for label in first.oof["label"][scored]])
    oofs = np.stack([_normalised(m.oof[classes].to_numpy(float)[scored]) for m in members])
    tests = np.stack([_normalised(m.test[classes].to_numpy(float)) for m in members])
    return Stacked(classes, scored, folds, labels, oofs, tests)


def run(names: list[str], paths: Paths = Paths(), *, method: str = "auto") -> dict:
    """Blend the experiments `names`; write the submission, the blended out-of-fold file and the metrics."""
    if len(names) < 2 or len(set(names)) != len(names):
        raise BlendError(f"name at least two different experiments to blend, got {' '.join(names) or 'none'}")
    members = [read_member(paths, name) for name in names]
    check_members(members)
    s = stack_members(members)
    params = load_params(paths.params)
    competition = read_competition(paths.raw, params.data.layout, check_images=False, labels_file=params.data.labels_file)
    task = task_of(params, competition)
    if task.kind != "multiclass" or task.metric not in ("accuracy", "log_loss"):
        raise BlendError(f"the blend weighs single-label class probabilities by accuracy or log loss; this competition "
                         f"is {task.kind}, scored by {task.metric}, which it does not blend")  # fmt: skip
    sample = read_sample_submission(competition.sample_submission)
    metric = competition_metric(sample.kind)
    tried = {m: nested_blend(s.oofs, s.labels, s.folds, make_fit(m, metric), m)[0]
             for m in (METHODS if method == "auto" else (method,))}  # fmt: skip
    method = min(tried, key=lambda m: rank_probs(tried[m], s.labels, metric))  # auto: the best out of fold
    blended = tried[method]
    weights = make_fit(method, metric)(s.oofs, s.labels)  # on every out-of-fold row: the weights the submission uses
    test_ids = members[0].test["id"].tolist()
    submission = make_submission(sample, test_ids, blend_probs(s.tests, weights, method), s.classes)
    text = render_submission(submission, sample, s.classes)  # checked before anything is written
    solution = competition.solution
    leaderboard = lambda probs: _leaderboard(make_submission(sample, test_ids, probs, s.classes), solution)  # noqa: E731
    figures = {
        "method": method, "metric": metric, "cv": score_probs(blended, s.labels),
        "methods": {m: {"cv": score_probs(probs, s.labels)} for m, probs in tried.items()},
        "weights": {m.name: round(float(w), 4) for m, w in zip(members, weights)},
        "leaderboard": leaderboard(blend_probs(s.tests, weights, method)),
        "members": {m.name: {"cv": score_probs(s.oofs[i], s.labels), "leaderboard": leaderboard(s.tests[i])}
                    for i, m in enumerate(members)},
    }  # fmt: skip
    out = np.zeros((len(s.scored), len(s.classes)))
    out[s.scored] = blended
    frame = pd.concat([members[0].oof[FOLD_COLUMNS].reset_index(drop=True), pd.DataFrame(out, columns=s.classes)],
                      axis=1)  # fmt: skip
    write_csv(paths.blend_oof, frame, float_format="%.6g")
    write_text(paths.blend_submission, text)
    write_json(paths.blend_metrics, {"blend": figures})
    _log_summary(figures)
    return figures


def _leaderboard(submission: pd.DataFrame, solution: Path | None) -> dict[str, float]:
    """The submission scored as the leaderboard would (`predict`'s scoring); empty without a solution."""
    if solution is None:
        return {}
    return {k: round(v, 6) for k, v in score_submission(submission, solution).items()}


def _normalised(probs: np.ndarray) -> np.ndarray:
    return probs / probs.sum(1, keepdims=True)  # undo the CSV's rounding


def _log_summary(figures: dict) -> None:
    for name, member in figures["members"].items():
        log.info("%-24s weight %.3f  cv accuracy %.4f  log loss %.4f  %s", name, figures["weights"][name],
                 member["cv"]["accuracy"], member["cv"]["log_loss"], member["leaderboard"])  # fmt: skip
    cv = figures["cv"]
    log.info("%-24s cv accuracy %.4f  log loss %.4f (weights fit out of fold)  %s", "blend", cv["accuracy"],
             cv["log_loss"], figures["leaderboard"])  # fmt: skip


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m kagglecv.blend", description=__doc__.splitlines()[0])
    parser.add_argument("experiments", nargs="+", help="experiment names, branches, tags, commits or 'workspace'")
    parser.add_argument("--method", choices=("auto", *METHODS), default="auto",
                        help="greedy: Caruana's selection on the competition's metric; weights: the average with the "
                        "lowest log loss; logit: pooled log-probabilities, lowest log loss; auto (default): whichever "
                        "of them scores best out of fold on the competition's metric")  # fmt: skip
    return parser.parse_args()


def _main() -> None:
    args = _arguments()
    run(args.experiments, method=args.method)


main = main_of(_main, BlendError, RevisionError, CompetitionError, SubmissionError, ParamsError)

if __name__ == "__main__":
    main()
