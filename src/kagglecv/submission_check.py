"""The submission checker: every problem of a submission file against the sample submission, one per line.

Checked: the header and its id column, the row count, duplicate, missing and extra ids, empty
cells, and each answer in the shape the competition expects (`SampleSubmission.kind`):

- `label`: a label among the training classes (and an integer where the sample's labels are);
- `probs`: one probability column per class, numbers in [0, 1] summing to 1 per row;
- `tags`: space-separated labels, each a training label, none repeated;
- `columns`: one column per label, numbers in [0, 1] (probabilities, or 0/1 decisions);
- `positive_prob`: one number in [0, 1], the positive class's probability;
- `top_k`: 1 to k space-separated classes, each a training class, none repeated. `kagglecv.submission` runs it from the command line and before
`predict` writes a submission.
"""

from __future__ import annotations

import csv
import io
import math
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
SUM_TOLERANCE = 1e-3  # a row of probabilities may sum to 1 +- this (values rounded in the CSV)
INTEGER = re.compile(r"^[+-]?\d+$")  # the sample's labels are integers when each matches
INTEGRAL_DECIMAL = re.compile(r"^[+-]?\d+\.0*$")  # 1.0, 1.: an integer written as a decimal


@dataclass(frozen=True)
class SampleSubmission:
    """A sample submission: its header and ids (`kagglecv.submission.read_sample_submission` reads one)."""

    path: Path
    columns: list[str]
    ids: list[str]  # as text, in the file's order
    answers: tuple[str, ...] = ()  # the first answer column, as text: the labels' type and spelling
    answer: str = ""  # the answers' shape (kagglecv.tasks.ANSWERS); "": label or probs, by the column count
    k: int = 1  # a top_k answer's most labels

    @property
    def integer_labels(self) -> bool:
        """The sample's labels are integers (7, not 7.0 or seven)."""
        return self.kind == "label" and bool(self.answers) and all(INTEGER.match(a) for a in self.answers)

    @property
    def id_column(self) -> str:
        return self.columns[0]

    @property
    def kind(self) -> str:
        """The answers' shape: `answer` when known, else 'label' (one answer column) or 'probs' (one per class)."""
        return self.answer or ("label" if len(self.columns) == 2 else "probs")


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a submission file, at `where`: 'line N' of the file, an id, or 'file'."""

    kind: str  # one of PROBLEM_KINDS
    where: str
    what: str

    def __str__(self) -> str:
        return f"{self.where}: {self.what}"


PROBLEM_KINDS = (
    "unreadable", "header", "id_column", "fields", "row_count", "duplicate_id", "missing_id", "extra_id",
    "empty_cell", "unknown_label", "label_type", "not_a_number", "probability_range", "probability_sum",
    "label_count", "duplicate_label",
)  # fmt: skip


@dataclass
class SubmissionCheck:
    """What the checker found: `problems` (none: ready to upload), `notes` on checks it could not do."""

    kind: str  # the sample's: label | probs
    rows: int = 0
    classes: int = 0  # training classes the labels were checked against (0: not checked)
    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def add(self, kind: str, where: str, what: str) -> None:
        assert kind in PROBLEM_KINDS, kind
        self.problems.append(Problem(kind, where, what))


def check_submission(path: Path, sample: SampleSubmission, classes: list[str] | None) -> SubmissionCheck:
    """Every problem of the submission file at `path` (see `check_submission_text`)."""
    try:
        text = Path(path).read_text(encoding="utf-8-sig")  # a byte-order mark is not part of the header
    except UnicodeDecodeError as err:
        check = SubmissionCheck(sample.kind)
        check.add("unreadable", "file", f"not UTF-8 text ({err})")
        return check
    return check_submission_text(text, sample, classes)


def check_submission_text(text: str, sample: SampleSubmission, classes: list[str] | None) -> SubmissionCheck:
    """Every problem of the CSV `text` against `sample`: header, id column, row count, duplicate, missing
    and extra ids, empty cells, and per answer cell an unknown label (`classes`: the training classes;
    None: not checked) or a probability that is not a number, outside [0, 1], or in a row not summing to 1."""
    check = SubmissionCheck(sample.kind)
    reader = csv.reader(io.StringIO(text))
    try:
        header = next(reader, None)
        rows = [(reader.line_num, row) for row in reader if row]  # (line in the file, cells); blank lines skipped
    except csv.Error as err:
        check.add("unreadable", f"line {reader.line_num}", f"not a readable CSV ({err})")
        return check
    if header is None:
        check.add("header", "line 1", f"the file is empty; expected the header {','.join(sample.columns)}")
        return check
    check.rows = len(rows)
    columns = _check_header(header, sample, check)
    if len(rows) != len(sample.ids):
        check.add("row_count", "file", f"{len(rows)} rows; the sample submission has {len(sample.ids)}")
    complete = []
    for line, row in rows:
        if len(row) == len(header):
            complete.append((line, row))
        else:
            check.add("fields", f"line {line}", f"{len(row)} fields; the header has {len(header)}")
    _check_ids(rows, sample, check)
    if sample.kind == "label":
        _check_labels(complete, columns, classes, check, integers=sample.integer_labels)
    elif sample.kind in ("tags", "top_k"):
        _check_label_lists(complete, columns, classes, check, most=sample.k if sample.kind == "top_k" else None)
    else:  # probs sum to 1 per row; columns and positive_prob are each a number in [0, 1]
        _check_probabilities(complete, columns, sample.kind == "probs" and len(columns) == len(sample.columns) - 1, check)
    return check


def _check_header(header: list[str], sample: SampleSubmission, check: SubmissionCheck) -> dict[str, int]:
    """The sample's answer columns in `header`: name -> position."""
    if header[0] != sample.id_column:
        wrong = f"the id column is {header[0]!r}; the sample submission's is {sample.id_column!r}"
        check.add("id_column", "line 1", wrong)
    expected, found = sample.columns[1:], header[1:]
    faults = [
        ("missing", [c for c in expected if c not in found]),
        ("unexpected", [c for c in found if c not in expected]),
        ("repeated", sorted(c for c, n in Counter(header).items() if n > 1)),
    ]
    if any(names for _, names in faults):
        listed = "; ".join(f"{what} {', '.join(map(repr, names))}" for what, names in faults if names)
        wanted = ",".join(sample.columns)
        check.add("header", "line 1", f"the columns do not match the sample submission's {wanted}: {listed}")
    # A misspelt answer column is still checked, by its position, when the column count matches.
    same_shape = len(found) == len(expected)
    return {c: found.index(c) + 1 if c in found else i + 1 for i, c in enumerate(expected) if c in found or same_shape}


def _check_ids(rows: list[tuple[int, list[str]]], sample: SampleSubmission, check: SubmissionCheck) -> None:
    expected, first_line = set(sample.ids), {}
    for line, row in rows:
        row_id = row[0]
        if row_id == "":
            check.add("empty_cell", f"line {line}", f"the id ({sample.id_column}) is empty")
        elif row_id in first_line:
            check.add("duplicate_id", f"line {line}", f"id {row_id!r} again (first on line {first_line[row_id]})")
        else:
            first_line[row_id] = line
            if row_id not in expected:
                check.add("extra_id", f"line {line}", f"id {row_id!r} is not in the sample submission")
    for row_id in sample.ids:
        if row_id not in first_line:
            check.add("missing_id", f"id {row_id!r}", "in the sample submission but not in the file")


def _check_labels(
    rows: list[tuple[int, list[str]]],
    columns: dict[str, int],
    classes: list[str] | None,
    check: SubmissionCheck,
    *,
    integers: bool = False,
) -> None:
    """Each label non-empty, a training class, and not written as a decimal when `integers` (the sample's
    labels are integers)."""
    if classes is None:
        check.notes.append("unknown labels not checked: no training classes (no data/folds.csv, no training labels)")
    known = set(classes or ())
    check.classes = len(known)
    if integers:  # a class the training files wrote as 1.0 is submitted as 1
        known |= {c.split(".")[0] for c in known if INTEGRAL_DECIMAL.match(c)}
    for name, k in columns.items():
        for line, row in rows:
            if row[k] == "":
                check.add("empty_cell", f"line {line}", f"column {name!r} is empty")
            elif integers and INTEGRAL_DECIMAL.match(row[k]):
                wrong = f"label {row[k]!r} is a decimal; the sample's labels are integers ({row[k].split('.')[0]})"
                check.add("label_type", f"line {line}", wrong)
            elif classes is not None and row[k] not in known:
                shown = ", ".join(classes[:10]) + (", …" if len(classes) > 10 else "")
                check.add("unknown_label", f"line {line}", f"label {row[k]!r} is not a training class ({shown})")


def _check_probabilities(
    rows: list[tuple[int, list[str]]], columns: dict[str, int], all_columns: bool, check: SubmissionCheck
) -> None:
    """Each cell a number in [0, 1]; each row's sum 1 (only when every class column is there to add up)."""
    for line, row in rows:
        values = []
        for name, k in columns.items():
            cell = row[k].strip()
            try:
                value = float(cell)
            except ValueError:
                value = math.nan
            if cell == "":
                check.add("empty_cell", f"line {line}", f"column {name!r} is empty")
            elif not math.isfinite(value):
                check.add("not_a_number", f"line {line}", f"column {name!r} is {cell!r}, not a number")
            else:
                if not 0.0 <= value <= 1.0:
                    check.add("probability_range", f"line {line}", f"column {name!r} is {cell}, outside [0, 1]")
                values.append(value)
        if all_columns and len(values) == len(columns) and abs(sum(values) - 1.0) > SUM_TOLERANCE:
            check.add("probability_sum", f"line {line}", f"the probabilities sum to {sum(values):.6g}, not 1")



def _check_label_lists(
    rows: list[tuple[int, list[str]]], columns: dict[str, int], classes: list[str] | None, check: SubmissionCheck,
    *, most: int | None,
) -> None:  # fmt: skip
    """Each cell: space-separated labels, each a training class, none twice, at most `most` (None: any number)."""
    if classes is None:
        check.notes.append("unknown labels not checked: no training classes (no data/folds.csv, no training labels)")
    known = set(classes or ())
    check.classes = len(known)
    for name, k in columns.items():
        for line, row in rows:
            labels = row[k].split()
            if not labels:
                check.add("empty_cell", f"line {line}", f"column {name!r} is empty")
            elif most is not None and len(labels) > most:
                check.add("label_count", f"line {line}", f"{len(labels)} labels; the competition scores at most {most}")
            repeated = sorted(c for c, n in Counter(labels).items() if n > 1)
            if repeated:
                check.add("duplicate_label", f"line {line}", f"label {repeated[0]!r} appears more than once")
            unknown = [label for label in labels if classes is not None and label not in known]
            if unknown:
                shown = ", ".join(classes[:10]) + (", …" if len(classes) > 10 else "")
                check.add("unknown_label", f"line {line}", f"label {unknown[0]!r} is not a training class ({shown})")
