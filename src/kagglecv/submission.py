"""Submissions shaped by the competition's own sample submission, checked, and scored like a leaderboard.

The sample submission decides everything: the id column's name, the ids' text and order,
whether the answer is one label column or one probability column per class, and the labels' type:
against a sample whose labels are integers, a label the training files wrote as 1.0 is written 1.

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
from sklearn.metrics import accuracy_score, log_loss

from kagglecv.paths import Paths
from kagglecv.submission_check import (
    INTEGRAL_DECIMAL,
    SampleSubmission,
    SubmissionCheck,
    check_submission,
    check_submission_text,
)

PROB_EPS = 1e-15  # log-loss competitions clip to [eps, 1 - eps]
SHIFT_FLOOR = 0.1  # a total variation distance of predicted class shares below this is never implausible
SHOWN_PER_KIND = 10  # problem lines printed per kind before "... and N more" (--all prints every one)


class SubmissionError(ValueError):
    """The submission cannot match the sample submission; the message says why."""


def read_sample_submission(path: Path) -> SampleSubmission:
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    if frame.shape[1] < 2:
        raise SubmissionError(f"{path}: a sample submission needs an id column and at least one answer column")
    answers = tuple(frame.iloc[:, 1].str.strip())
    return SampleSubmission(path=path, columns=list(frame.columns), ids=frame.iloc[:, 0].tolist(), answers=answers)


def make_submission(
    sample: SampleSubmission, test_ids: list[str], probs: np.ndarray, classes: list[str]
) -> pd.DataFrame:
    """The submission frame for `probs` (N, num_classes) of `test_ids`, in the sample's ids and order."""
    position = {test_id: i for i, test_id in enumerate(test_ids)}
    missing = [i for i in sample.ids if i not in position]
    if missing:
        raise SubmissionError(f"{sample.path}: {len(missing)} ids have no test image, e.g. {missing[:3]}")
    probs = probs[[position[i] for i in sample.ids]]
    frame = pd.DataFrame({sample.id_column: sample.ids})
    if sample.kind == "label":
        spelled = [_like_sample(c, sample) for c in classes]
        frame[sample.columns[1]] = [spelled[k] for k in probs.argmax(1)]
        return frame
    unknown = [c for c in sample.columns[1:] if c not in classes]
    if unknown:
        raise SubmissionError(f"{sample.path}: probability columns {unknown[:5]} are not training classes")
    clipped = np.clip(probs, PROB_EPS, 1 - PROB_EPS)
    clipped = clipped / clipped.sum(1, keepdims=True)
    for column in sample.columns[1:]:
        frame[column] = clipped[:, classes.index(column)]
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


def score_submission(submission: pd.DataFrame, solution_path: Path) -> dict[str, float]:
    """Leaderboard score: `accuracy` for a label column, multi-class `log_loss` for probability columns."""
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
    """The sample submission (`sample_path`, or the competition's in `paths.raw`) and the training classes
    (from `paths.folds`, or else the competition's training labels; None when neither is there)."""
    from kagglecv.data import CompetitionError, read_folds, sort_labels
    from kagglecv.ingest import read_competition
    from kagglecv.params import load_params

    raw_dir, folds_path = paths.raw, paths.folds
    competition = None
    if sample_path is None or not folds_path.exists():
        data = load_params(paths.params).data if paths.params.exists() else None
        layout, labels_file = (data.layout, data.labels_file) if data else ("auto", "")
        try:
            competition = read_competition(raw_dir, layout, check_images=False, labels_file=labels_file)
        except CompetitionError as err:
            if sample_path is None:
                raise SubmissionError(f"no sample submission to check against ({err}); pass --sample FILE") from None
    sample = read_sample_submission(sample_path or competition.sample_submission)
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
