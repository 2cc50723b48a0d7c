"""Submissions shaped by the competition's own sample submission, checked, and scored like a leaderboard.

The sample submission decides the id column's name, the ids' text and order and the labels' type
(against a sample whose labels are integers, a label the training files wrote as 1.0 is written
1); the sample and the task together (`kagglecv.tasks.Task.answer`) the answers' shape: a label, a
probability column per class, space-separated tags, a column per label, the positive class's
probability, or the k most likely classes. Decisions apply the thresholds `evaluate` tuned.

`python -m kagglecv.submission check FILE [--sample S]` (or `kagglecv-check FILE`) checks a
submission file against the sample submission, listing every problem, one line each; `predict`
runs the same checker on what it is about to write.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd

from kagglecv.metrics import decide, get_metric, rank_classes
from kagglecv.paths import Paths
from kagglecv.submission_check import (
    INTEGRAL_DECIMAL,
    SampleSubmission,
    SubmissionCheck,
    check_submission,
    check_submission_text,
)
from kagglecv.tasks import Task, tag_key

PROB_EPS = 1e-15  # log-loss competitions clip to [eps, 1 - eps]
SHIFT_FLOOR = 0.1  # a total variation distance of predicted class shares below this is never implausible
SHOWN_PER_KIND = 10  # problem lines printed per kind before "... and N more" (--all prints every one)


class SubmissionError(ValueError):
    """The submission cannot match the sample submission; the message says why."""


def read_sample_submission(path: Path, task: Task | None = None) -> SampleSubmission:
    """The sample submission; its answers' shape is the task's (`task.answer`), or else read from its columns."""
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    if frame.shape[1] < 2:
        raise SubmissionError(f"{path}: a sample submission needs an id column and at least one answer column")
    answers = tuple(frame.iloc[:, 1].str.strip())
    shape = {"answer": task.answer, "k": task.k} if task is not None else {}
    return SampleSubmission(path=path, columns=list(frame.columns), ids=frame.iloc[:, 0].tolist(), answers=answers,
                            **shape)  # fmt: skip


def make_submission(
    sample: SampleSubmission, test_ids: list[str], probs: np.ndarray, classes: list[str], *,
    task: Task | None = None, thresholds: list[float] | None = None,
) -> pd.DataFrame:  # fmt: skip
    """The submission frame for `probs` (N, num_classes) of `test_ids`, in the sample's ids and order and the
    answers' shape `sample.kind`; decisions by `task` (multiclass when None) with `thresholds`."""
    position = {test_id: i for i, test_id in enumerate(test_ids)}
    missing = [i for i in sample.ids if i not in position]
    if missing:
        raise SubmissionError(f"{sample.path}: {len(missing)} ids have no test image, e.g. {missing[:3]}")
    probs = probs[[position[i] for i in sample.ids]]
    frame = pd.DataFrame({sample.id_column: sample.ids})
    kind, spelled = sample.kind, [_like_sample(c, sample) for c in classes]
    if kind != "probs":
        return _answer_columns(frame, sample, probs, spelled, task, thresholds)
    unknown = [c for c in sample.columns[1:] if c not in classes]
    if unknown:
        raise SubmissionError(f"{sample.path}: probability columns {unknown[:5]} are not training classes")
    clipped = np.clip(probs, PROB_EPS, 1 - PROB_EPS)
    clipped = clipped / clipped.sum(1, keepdims=True)
    for column in sample.columns[1:]:
        frame[column] = clipped[:, classes.index(column)]
    return frame


def _answer_columns(
    frame: pd.DataFrame, sample: SampleSubmission, probs: np.ndarray, spelled: list[str], task: Task | None,
    thresholds: list[float] | None,
) -> pd.DataFrame:  # fmt: skip
    """`frame` with the answers of every shape but `probs` (see the module docstring)."""
    kind, column = sample.kind, sample.columns[1]
    task_kind = task.kind if task is not None else "multiclass"
    if kind == "label":
        frame[column] = [spelled[k] for k in decide(task_kind, probs, thresholds)]
    elif kind == "positive_prob":
        frame[column] = np.clip(probs[:, 1], PROB_EPS, 1 - PROB_EPS)
    elif kind == "top_k":
        frame[column] = [" ".join(spelled[j] for j in row) for row in rank_classes(probs, sample.k)]
    elif kind == "tags":
        frame[column] = [" ".join(spelled[j] for j in np.flatnonzero(row)) for row in decide(task_kind, probs, thresholds)]
    else:  # columns: a column per label, the probability for a score metric, else the 0/1 decision
        index = {c: j for j, c in enumerate(spelled)}
        unknown = [c for c in sample.columns[1:] if tag_key(c) not in index]
        if unknown:
            raise SubmissionError(f"{sample.path}: label columns {unknown[:5]} are not training labels")
        scores = task is not None and get_metric(task.metric).input == "scores"
        values = np.clip(probs, PROB_EPS, 1 - PROB_EPS) if scores else decide(task_kind, probs, thresholds)
        for c in sample.columns[1:]:
            frame[c] = values[:, index[tag_key(c)]]
    return frame


def _like_sample(label: str, sample: SampleSubmission) -> str:
    """`label` in the sample's type: an integral decimal ('1.0') as an integer where the sample's labels are."""
    if sample.integer_labels and INTEGRAL_DECIMAL.match(label):
        return label.split(".")[0]
    return label


def class_shift(probs: np.ndarray, reference: np.ndarray) -> tuple[float, float]:
    """How far the predicted classes of `probs` (N, K) lie from the class shares `reference` (K,): the total
    variation distance of the shares, and the largest distance chance plausibly gives for N images.

    The limit is three times the distance expected from drawing N images from `reference` (each share's
    binomial spread), and at least `SHIFT_FLOOR`; a distance above it points at mismatched ids or classes."""
    n, k = probs.shape
    shares = np.bincount(probs.argmax(1), minlength=k) / max(n, 1)
    reference = reference / reference.sum()
    distance = 0.5 * float(np.abs(shares - reference).sum())
    chance = 0.5 * float(np.sqrt(2 * reference * (1 - reference) / (np.pi * max(n, 1))).sum())
    return distance, max(SHIFT_FLOOR, 3 * chance)


def render_submission(frame: pd.DataFrame, sample: SampleSubmission, classes: list[str]) -> str:
    """`frame` as the CSV text to upload, once the checker passes it; every writer of a submission goes
    through here, so a file that fails the check is never written."""
    text = frame.to_csv(index=False, lineterminator="\n")
    check = check_submission_text(text, sample, classes)
    if not check.ok:
        shown = "\n".join(f"  - {p}" for p in check.problems[:SHOWN_PER_KIND])
        raise SubmissionError(f"the new submission fails its check ({len(check.problems)} problem(s)):\n{shown}")
    return text


def read_reference(
    sample_path: Path | None, paths: Paths = Paths()
) -> tuple[SampleSubmission, list[str] | None]:
    """The sample submission (`sample_path`, or the competition's in `paths.raw`), shaped by the competition's
    task (`task:`, `metric:` in params.yaml), and the training classes (the task's; else from `paths.folds`;
    None when neither is there)."""
    from kagglecv.data import CompetitionError, read_folds, sort_labels
    from kagglecv.ingest import read_competition
    from kagglecv.params import load_params
    from kagglecv.tasks import task_of

    raw_dir, folds_path = paths.raw, paths.folds
    competition, task = None, None
    params = load_params(paths.params) if paths.params.exists() else None
    layout, labels_file = (params.data.layout, params.data.labels_file) if params else ("auto", "")
    try:
        competition = read_competition(raw_dir, layout, check_images=False, labels_file=labels_file)
    except CompetitionError as err:
        if sample_path is None:
            raise SubmissionError(f"no sample submission to check against ({err}); pass --sample FILE") from None
    if competition is not None and params is not None:
        task = task_of(params, competition)
    sample = read_sample_submission(sample_path or competition.sample_submission, task)
    if task is not None:
        return sample, task.classes
    if folds_path.exists():
        return sample, sort_labels(read_folds(folds_path)["label"].tolist())
    return sample, competition.classes if competition is not None else None


def print_check(check: SubmissionCheck, path: Path, sample: SampleSubmission, *, show_all: bool = False) -> int:
    """One line per problem (at most `SHOWN_PER_KIND` of a kind unless `show_all`), then FAILED or OK
    with the counts; returns the exit status: 1 when there is a problem, else 0."""
    shown: Counter[str] = Counter()
    for problem in check.problems:
        shown[problem.kind] += 1
        if show_all or shown[problem.kind] <= SHOWN_PER_KIND:
            print(f"{path}: {problem}")
    for kind, n in shown.items():
        if not show_all and n > SHOWN_PER_KIND:
            print(f"{path}: ... and {n - SHOWN_PER_KIND} more {kind} problems (--all lists every one)")
    for note in check.notes:
        print(f"{path}: note: {note}")
    if check.problems:
        kinds = ", ".join(f"{kind} {n}" for kind, n in shown.items())
        print(f"FAILED {path}: {len(check.problems)} problem(s) ({kinds}) against {sample.path}")
        return 1
    if sample.kind == "probs":
        answers = f"{len(sample.columns) - 1} probabilities summing to 1"
    elif sample.kind in ("columns", "positive_prob"):
        answers = f"{len(sample.columns) - 1} number(s) in [0, 1]"
    elif sample.kind in ("tags", "top_k"):
        most = f"1 to {sample.k}" if sample.kind == "top_k" else "space-separated"
        answers = f"{most} labels among the {check.classes} training classes"
    else:
        answers = f"labels among the {check.classes} training classes" if check.classes else "one label each"
    print(f"OK {path}: {check.rows} rows, the {len(sample.ids)} ids of {sample.path}, {answers}")
    return 0


def _add_check_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", type=Path, help="the submission CSV to check")
    parser.add_argument("--sample", type=Path, help="sample submission (default: the competition's in data/raw)")
    parser.add_argument("--all", action="store_true", help=f"list every problem, not {SHOWN_PER_KIND} of each kind")


def _run_check(args: argparse.Namespace) -> int:
    from kagglecv.data import CompetitionError
    from kagglecv.params import ParamsError

    try:
        if not args.file.is_file():
            raise SubmissionError(f"{args.file} not found")
        sample, classes = read_reference(args.sample)
    except (SubmissionError, CompetitionError, ParamsError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return print_check(check_submission(args.file, sample, classes), args.file, sample, show_all=args.all)


def main(argv: list[str] | None = None) -> int:
    """`python -m kagglecv.submission check FILE [--sample S] [--all]`: exit 0 OK, 1 problems, 2 cannot check."""
    parser = argparse.ArgumentParser(prog="python -m kagglecv.submission", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    _add_check_arguments(commands.add_parser("check", help="check a submission file against the sample submission"))
    return _run_check(parser.parse_args(argv))


def check_main(argv: list[str] | None = None) -> int:
    """The `kagglecv-check FILE [--sample S] [--all]` console script."""
    parser = argparse.ArgumentParser(prog="kagglecv-check", description="Check a submission against the sample one.")
    _add_check_arguments(parser)
    return _run_check(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
