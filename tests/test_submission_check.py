"""The submission checker: one test per problem kind, each asserting the problem's line and the exit status;
`predict` refuses a submission that fails it."""

from __future__ import annotations

import importlib
import shutil
import tomllib
from pathlib import Path

import pandas as pd
import pytest

from kagglecv.stages import predict
from kagglecv.submission import SHOWN_PER_KIND, main
from kagglecv.submission_check import PROBLEM_KINDS
from tests.conftest import REPO
from tests.hardening_fixtures import run_main, snapshot, trained_project_fixtures

LABELS = "ImageId,Label\n1,0\n2,0\n3,0\n4,0\n"  # a label competition's sample submission
PROBS = "id,cat,dog\na,0.5,0.5\nb,0.5,0.5\n"  # a probability competition's
GOOD_LABELS = "ImageId,Label\n1,3\n2,7\n3,cat\n4,0\n"
GOOD_PROBS = "id,cat,dog\na,0.9,0.1\nb,0.25,0.75\n"

trained, project = trained_project_fixtures()  # a tiny competition's pipeline, run once; a copy per test


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A project folder with data/folds.csv naming the training classes 0, 3, 7 and cat."""
    (tmp_path / "data").mkdir()
    folds = pd.DataFrame({"id": ["a", "b", "c", "d"], "label": ["0", "3", "7", "cat"], "fold": [0, 1, 0, 1]})
    folds.to_csv(tmp_path / "data/folds.csv", index=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def check(workdir: Path, text: str, sample: str, capsys: pytest.CaptureFixture, *extra: str) -> tuple[int, list[str]]:
    """Run `python -m kagglecv.submission check` on `text` against `sample`: (exit status, printed lines)."""
    (workdir / "sample.csv").write_text(sample)
    (workdir / "sub.csv").write_text(text)
    code = main(["check", "sub.csv", "--sample", "sample.csv", *extra])
    return code, capsys.readouterr().out.splitlines()


@pytest.mark.parametrize(
    ("text", "sample", "answers"),
    [(GOOD_LABELS, LABELS, "labels among the 4 training classes"), (GOOD_PROBS, PROBS, "2 probabilities summing to 1")],
)
def test_a_good_file_gets_one_ok_line_with_its_counts_and_exit_0(workdir, capsys, text, sample, answers) -> None:
    code, lines = check(workdir, text, sample, capsys)
    assert code == 0
    rows = text.count("\n") - 1
    assert lines == [f"OK sub.csv: {rows} rows, the {rows} ids of sample.csv, {answers}"]


@pytest.mark.parametrize(
    ("kind", "text", "sample", "line"),
    [
        ("header", "ImageId,Labels\n1,3\n2,7\n3,cat\n4,0\n", LABELS,
         "sub.csv: line 1: the columns do not match the sample submission's ImageId,Label: missing 'Label'; "
         "unexpected 'Labels'"),
        ("id_column", "id,Label\n1,3\n2,7\n3,cat\n4,0\n", LABELS,
         "sub.csv: line 1: the id column is 'id'; the sample submission's is 'ImageId'"),
        ("row_count", "ImageId,Label\n1,3\n2,7\n", LABELS, "sub.csv: file: 2 rows; the sample submission has 4"),
        ("duplicate_id", "ImageId,Label\n1,3\n2,7\n2,7\n3,cat\n4,0\n", LABELS,
         "sub.csv: line 4: id '2' again (first on line 3)"),
        ("missing_id", "ImageId,Label\n1,3\n2,7\n4,0\n", LABELS,
         "sub.csv: id '3': in the sample submission but not in the file"),
        ("extra_id", "ImageId,Label\n1,3\n2,7\n3,cat\n4,0\n5,0\n", LABELS,
         "sub.csv: line 6: id '5' is not in the sample submission"),
        ("empty_cell", "ImageId,Label\n1,3\n2,\n3,cat\n4,0\n", LABELS, "sub.csv: line 3: column 'Label' is empty"),
        ("empty_cell", "ImageId,Label\n1,3\n,7\n3,cat\n4,0\n", LABELS, "sub.csv: line 3: the id (ImageId) is empty"),
        ("unknown_label", "ImageId,Label\n1,3\n2,8\n3,cat\n4,0\n", LABELS,
         "sub.csv: line 3: label '8' is not a training class (0, 3, 7, cat)"),
        ("probability_range", "id,cat,dog\na,1.5,-0.5\nb,0.25,0.75\n", PROBS,
         "sub.csv: line 2: column 'cat' is 1.5, outside [0, 1]"),
        ("probability_sum", "id,cat,dog\na,0.9,0.2\nb,0.25,0.75\n", PROBS,
         "sub.csv: line 2: the probabilities sum to 1.1, not 1"),
        ("not_a_number", "id,cat,dog\na,0.9,0.1\nb,0.25,high\n", PROBS,
         "sub.csv: line 3: column 'dog' is 'high', not a number"),
        ("not_a_number", "id,cat,dog\na,nan,0.1\nb,0.25,0.75\n", PROBS,
         "sub.csv: line 2: column 'cat' is 'nan', not a number"),
        ("empty_cell", "id,cat,dog\na,0.9,0.1\nb,,0.75\n", PROBS, "sub.csv: line 3: column 'cat' is empty"),
        ("fields", "ImageId,Label\n1,3\n2,7,7\n3,cat\n4,0\n", LABELS, "sub.csv: line 3: 3 fields; the header has 2"),
    ],
)  # fmt: skip
def test_each_problem_is_one_line_naming_its_row_or_id_and_the_exit_status_is_1(
    workdir, capsys, kind: str, text: str, sample: str, line: str
) -> None:
    code, lines = check(workdir, text, sample, capsys)
    assert code == 1
    assert line in lines, "\n".join(lines)
    assert lines[-1].startswith("FAILED sub.csv: ") and f" {kind} " in lines[-1].replace("(", " ")


def test_the_first_two_rows_of_a_good_file_fail(workdir, capsys) -> None:
    """The issue's case: a file cut to its first two rows used to pass."""
    code, lines = check(workdir, "\n".join(GOOD_LABELS.splitlines()[:3]) + "\n", LABELS, capsys)
    assert code == 1
    assert "sub.csv: file: 2 rows; the sample submission has 4" in lines
    assert "sub.csv: id '4': in the sample submission but not in the file" in lines


def test_every_problem_is_listed_at_once(workdir, capsys) -> None:
    code, lines = check(workdir, "id,Label\n1,3\n1,3\n9,x\n", LABELS, capsys)
    assert code == 1
    assert lines[-1] == (
        "FAILED sub.csv: 8 problem(s) (id_column 1, row_count 1, duplicate_id 1, extra_id 1, missing_id 3, "
        "unknown_label 1) against sample.csv"
    )
    assert len(lines) == 9


def test_a_file_that_is_not_text_is_a_problem(workdir, capsys) -> None:
    (workdir / "sample.csv").write_text(LABELS)
    (workdir / "sub.csv").write_bytes(b"ImageId,Label\n1,\xff\xfe\n")
    assert main(["check", "sub.csv", "--sample", "sample.csv"]) == 1
    assert capsys.readouterr().out.startswith("sub.csv: file: not UTF-8 text")


def test_many_problems_of_one_kind_are_summed_up_unless_all_is_asked(workdir, capsys) -> None:
    n = SHOWN_PER_KIND + 5
    sample = "ImageId,Label\n" + "".join(f"{i},0\n" for i in range(n))
    code, lines = check(workdir, "ImageId,Label\n", sample, capsys)
    assert code == 1
    assert sum("in the sample submission but not in the file" in line for line in lines) == SHOWN_PER_KIND
    assert "sub.csv: ... and 5 more missing_id problems (--all lists every one)" in lines
    _, lines = check(workdir, "ImageId,Label\n", sample, capsys, "--all")
    assert sum("in the sample submission but not in the file" in line for line in lines) == n


def test_without_training_classes_the_label_check_is_skipped_and_said_so(workdir, capsys) -> None:
    (workdir / "data/folds.csv").unlink()  # and no data/raw either
    code, lines = check(workdir, "ImageId,Label\n1,3\n2,anything\n3,cat\n4,0\n", LABELS, capsys)
    assert code == 0
    assert lines[0] == (
        "sub.csv: note: unknown labels not checked: no training classes (no data/folds.csv, no training labels)"
    )
    assert lines[1].startswith("OK sub.csv: 4 rows")


def test_the_default_sample_is_the_competitions_in_data_raw(digits_raw, tmp_path, monkeypatch, capsys) -> None:
    shutil.copytree(digits_raw, tmp_path / "data/raw")
    monkeypatch.chdir(tmp_path)
    sample = pd.read_csv("data/raw/sample_submission.csv", dtype=str)
    sample.assign(Label="7").to_csv("good.csv", index=False)
    assert main(["check", "good.csv"]) == 0
    assert capsys.readouterr().out.startswith(f"OK good.csv: {len(sample)} rows, the {len(sample)} ids of data/raw/")
    sample.assign(Label="eleven").head(2).to_csv("bad.csv", index=False)  # classes from the training labels
    assert main(["check", "bad.csv"]) == 1
    out = capsys.readouterr().out
    assert "bad.csv: line 2: label 'eleven' is not a training class (0, 1, 2" in out
    assert f"bad.csv: file: 2 rows; the sample submission has {len(sample)}" in out


def test_a_missing_file_or_sample_is_exit_2_naming_it(workdir, capsys) -> None:
    assert main(["check", "nope.csv", "--sample", "nope.csv"]) == 2
    assert capsys.readouterr().err == "error: nope.csv not found\n"
    (workdir / "sub.csv").write_text(GOOD_LABELS)
    assert main(["check", "sub.csv"]) == 2  # no --sample and no data/raw
    assert "no sample submission to check against" in capsys.readouterr().err


def test_the_console_script_kagglecv_check_runs_the_checker(workdir, capsys) -> None:
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    module, function = scripts["kagglecv-check"].split(":")
    check_main = getattr(importlib.import_module(module), function)
    (workdir / "sample.csv").write_text(LABELS)
    (workdir / "sub.csv").write_text("ImageId,Label\n1,3\n")
    assert check_main(["sub.csv", "--sample", "sample.csv"]) == 1
    assert "sub.csv: file: 1 rows; the sample submission has 4" in capsys.readouterr().out


def test_every_problem_kind_has_a_test() -> None:
    tested = {
        "header", "id_column", "row_count", "duplicate_id", "missing_id", "extra_id", "empty_cell", "unknown_label",
        "label_type", "probability_range", "probability_sum", "not_a_number", "fields", "unreadable",
        "label_count", "duplicate_label",  # tests/test_tasks.py
    }  # fmt: skip
    assert tested == set(PROBLEM_KINDS)


def test_predict_refuses_a_submission_that_fails_the_check_and_keeps_the_previous_files(
    project: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = snapshot(project)
    make = predict.make_submission
    monkeypatch.setattr(predict, "make_submission", lambda *args, **kwargs: make(*args, **kwargs).iloc[:-1])  # a row lost
    code, err = run_main(predict, project, capsys)
    assert code == 1
    assert err.startswith("error: the new submission fails its check (2 problem(s)):\n")
    assert "  - file: 3 rows; the sample submission has 4\n" in err
    assert "  - id '4': in the sample submission but not in the file\n" in err
    assert snapshot(project) == before
