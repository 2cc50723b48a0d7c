"""`python -m kagglecv.submit`: the official client library runs; only its HTTP transport is replaced by a fake Kaggle."""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import requests
import yaml
from kaggle.api.kaggle_api_extended import KaggleApi
from requests.adapters import HTTPAdapter

from kagglecv import submit
from kagglecv.journal import COLUMNS, read_scores
from kagglecv.paths import Paths
from tests.conftest import REPO

SECRET = "f00dcafe0123456789-not-a-real-key"
COMPETITION = "digit-recognizer"
SERVICE = "https://api.kaggle.com/v1/competitions.CompetitionApiService/"
UPLOAD_URL = "https://upload.kaggle.test/blob/1"


class FakeKaggle:
    """Kaggle's API at the HTTP transport: answers the client library's requests and records them."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, bytes]] = []  # (method, url, body)
        self.auth: set[str] = set()
        self.refuse: tuple[int, str] | None = None  # CreateSubmission answers this (status, message)
        self.offline = False  # no network: every request fails to connect
        self.upload_status = 200  # the file upload's answer
        self.listings: list[dict] = [{"ref": 321, "status": "PENDING"}, {"ref": 321, "status": "COMPLETE", "publicScore": "0.99722"}]

    def send(self, request: requests.PreparedRequest, **kwargs: object) -> requests.Response:
        body = request.body.read() if hasattr(request.body, "read") else (request.body or b"")
        body = body.encode() if isinstance(body, str) else body
        self.requests.append((request.method, request.url, body))
        if self.offline:
            raise requests.ConnectionError(f"Max retries exceeded with url: {request.url}")
        if request.url == UPLOAD_URL:  # a signed URL: no credentials
            return self.answer(request, self.upload_status, {})
        self.auth.add(request.headers.get("Authorization", ""))
        name = request.url.removeprefix(SERVICE)
        if name == "StartSubmissionUpload":
            return self.answer(request, 200, {"token": "blob-token", "createUrl": UPLOAD_URL})
        if name == "CreateSubmission":
            if self.refuse:
                return self.answer(request, self.refuse[0], {"code": self.refuse[0], "message": self.refuse[1]})
            return self.answer(request, 200, {"message": "Successfully submitted", "ref": 321})
        if name == "ListSubmissions":
            listing = self.listings.pop(0) if len(self.listings) > 1 else self.listings[0]
            return self.answer(request, 200, {"submissions": [{"ref": 320, "status": "COMPLETE", "publicScore": "0.5"}, listing]})
        return self.answer(request, 404, {"code": 404, "message": f"no such call {name}"})

    @staticmethod
    def answer(request: requests.PreparedRequest, status: int, payload: dict) -> requests.Response:
        response = requests.Response()
        response.status_code, response.url, response.request = status, request.url, request
        response.headers["Content-Type"] = "application/json"
        response._content = json.dumps(payload).encode()
        return response

    @property
    def calls(self) -> list[str]:
        return [url.removeprefix(SERVICE) if url != UPLOAD_URL else "upload" for _, url, _ in self.requests]


@pytest.fixture
def kaggle(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> FakeKaggle:
    fake = FakeKaggle()
    monkeypatch.setattr(HTTPAdapter, "send", lambda adapter, request, **kwargs: fake.send(request, **kwargs))
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setattr(KaggleApi, "config", str(home / ".kaggle" / "kaggle.json"))
    monkeypatch.delenv("KAGGLE_API_TOKEN", raising=False)
    monkeypatch.delenv("KAGGLE_CONFIG_DIR", raising=False)
    monkeypatch.setenv("KAGGLE_USERNAME", "someone")
    monkeypatch.setenv("KAGGLE_KEY", SECRET)
    return fake


@pytest.fixture
def project(tmp_path: Path, digits_raw: Path, monkeypatch: pytest.MonkeyPatch) -> Paths:
    """A workspace after `dvc repro`: params naming the competition, the competition, cv scores, a submission."""
    root = tmp_path / "project"
    paths = Paths(root)
    shutil.copytree(digits_raw, paths.raw)
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["data"]["competition"] = COMPETITION
    paths.params.write_text(yaml.safe_dump(params))
    paths.cv_metrics.parent.mkdir(parents=True)
    paths.cv_metrics.write_text(json.dumps({"cv": {"accuracy": 0.9937, "macro_f1": 0.99, "log_loss": 0.0315}}))
    paths.submission.parent.mkdir(parents=True)
    shutil.copy(paths.raw / "solution.csv", paths.submission)  # the right ids and labels: passes the checker
    monkeypatch.chdir(root)
    return paths


def no_sleep(seconds: float) -> None:
    pass


def run_main(capsys: pytest.CaptureFixture, *args: str) -> tuple[int, str, str]:
    code = submit.main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_a_failing_submission_is_refused_before_any_upload(project: Paths, kaggle: FakeKaggle, capsys) -> None:
    frame = pd.read_csv(project.submission, dtype=str)
    frame.iloc[:-1].to_csv(project.submission, index=False)  # one id missing
    code, out, err = run_main(capsys, "--wait")
    assert code == 1
    assert "missing" in out and "FAILED" in out  # the checker's own report
    assert err.strip().splitlines() == [f"error: {project.submission.relative_to(project.root)} fails the submission "
                                        "checker (2 problem(s)): nothing was submitted"]  # row count, missing id  # fmt: skip
    assert kaggle.requests == []
    assert not project.submission_history.exists() and not project.kaggle_metrics.exists()


def test_a_scored_submission_lands_in_metrics_and_history(project: Paths, kaggle: FakeKaggle, monkeypatch, capsys) -> None:
    slept: list[float] = []
    monkeypatch.setattr(submit.time, "sleep", slept.append)
    code, out, err = run_main(capsys, "--wait")
    assert code == 0, err
    assert kaggle.calls == ["StartSubmissionUpload", "upload", "CreateSubmission", "ListSubmissions", "ListSubmissions"]
    assert kaggle.requests[1][2] == project.submission.read_bytes()  # the file itself was uploaded
    created = json.loads(kaggle.requests[2][2])
    assert created["competitionName"] == COMPETITION and created["blobFileTokens"] == "blob-token"
    assert created["submissionDescription"] == "workspace @ no commit: cv.accuracy 0.9937, cv.log_loss 0.0315"
    assert kaggle.auth == {"Basic " + base64.b64encode(f"someone:{SECRET}".encode()).decode()}
    assert [s for s in slept if s >= submit.POLL_FIRST_S] == [5.0, 10.0]  # polled with backoff until scored
    assert json.loads(project.kaggle_metrics.read_text()) == {"kaggle": {"public": 0.99722}}
    history = pd.read_csv(project.submission_history, dtype=str, keep_default_na=False)
    assert list(history.columns) == COLUMNS
    row = history.iloc[0].to_dict()
    assert {k: row[k] for k in ("experiment", "commit", "cv.accuracy", "cv.log_loss", "public", "private", "metric", "ref")} == {
        "experiment": "workspace", "commit": "", "cv.accuracy": "0.9937", "cv.log_loss": "0.0315", "public": "0.99722",
        "private": "", "metric": "accuracy", "ref": "321",
    }  # fmt: skip
    assert row["message"] == created["submissionDescription"]

    kaggle.listings = [{"ref": 321, "status": "COMPLETE", "publicScore": "0.99722", "privateScore": "0.99611"}]
    assert run_main(capsys, "--refresh")[0] == 0  # the competition closed: private scores appear
    assert read_scores(project.kaggle_metrics) == {"public": 0.99722, "private": 0.99611}
    assert pd.read_csv(project.submission_history)["private"].tolist() == [0.99611]


def test_history_prints_the_gap_between_cv_and_public(project: Paths, kaggle: FakeKaggle, capsys) -> None:
    assert submit.submit(project, file=project.submission, message="first", wait=True, sleep=no_sleep).public == 0.99722
    kaggle.listings = [{"ref": 321, "status": "PENDING"}]
    submit.submit(project, file=project.submission, message="second, unscored", wait=False)
    assert json.loads(project.kaggle_metrics.read_text()) == {"kaggle": {}}  # the latest submission has no score yet
    code, out, _ = run_main(capsys, "--history")
    lines = out.splitlines()
    assert code == 0 and lines[0].split()[:7] == ["time", "experiment", "commit", "metric", "cv", "public", "gap"]
    assert "0.9937" in lines[1] and "0.99722" in lines[1] and "+0.00352" not in lines[1] and "0.00352" in lines[1]
    assert "second, unscored" in lines[2] and "0.99722" not in lines[2]
    assert lines[-1] == "1 scored submission(s): public - cv gap mean +0.0035, latest +0.0035"


def test_waiting_is_bounded_and_an_unscored_submission_stays_in_the_journal(project: Paths, kaggle: FakeKaggle) -> None:
    kaggle.listings = [{"ref": 321, "status": "PENDING"}]
    slept: list[float] = []
    with pytest.raises(submit.SubmitError, match=r"has not scored submission 321 after 3 min.*--refresh"):
        submit.submit(project, file=project.submission, message=None, wait=True, timeout_s=180, sleep=slept.append)
    assert slept == [5.0, 10.0, 20.0, 40.0, 60.0] and sum(slept) <= 180
    assert pd.read_csv(project.submission_history)["ref"].tolist() == [321]
    assert submit.poll_delays(3600)[-3:] == [60.0, 60.0, 60.0] and sum(submit.poll_delays(3600)) <= 3600


@pytest.mark.parametrize(
    ("status", "said", "message"),
    [
        (403, "You must accept this competition's rules before you'll be able to submit.",
         r"^error: Kaggle refused the submission to 'digit-recognizer' \(HTTP 403\): accept the competition's rules at "
         r"https://www.kaggle.com/competitions/digit-recognizer/rules, then submit again$"),
        (400, "Submission not allowed:  Your team has used its daily Submission allowance (5) today, please try again "
              "tomorrow UTC (4.2 hours from now).",
         r"^error: Kaggle's daily submission limit for 'digit-recognizer' is reached: nothing was submitted; submit again "
         r"after it resets at 00:00 UTC"),
        (400, "Submission not allowed: The competition has ended and does not accept late submissions.",
         r"^error: 'digit-recognizer' takes no submissions \(HTTP 400: .*\): the competition has closed"),
        (401, "Unauthenticated", r"^error: Kaggle rejected the credentials \(HTTP 401\): check KAGGLE_USERNAME and KAGGLE_KEY"),
        (500, f"internal error for key {SECRET}", r"^error: Kaggle answered HTTP 500 for 'digit-recognizer': internal error for key \*\*\*"),
    ],
)  # fmt: skip
def test_kaggle_errors_become_one_line_that_says_what_to_do(
    project: Paths, kaggle: FakeKaggle, capsys, caplog, status: int, said: str, message: str
) -> None:  # fmt: skip
    kaggle.refuse = (status, said)
    code, out, err = run_main(capsys, "--wait")
    assert code == 1 and len(err.strip().splitlines()) == 1, err
    assert re.match(message, err.strip()), err
    assert not project.submission_history.exists()  # nothing was submitted, nothing journaled
    assert SECRET not in out + err + caplog.text


def test_no_network_or_a_failed_upload_submit_nothing(project: Paths, kaggle: FakeKaggle, capsys) -> None:
    kaggle.offline = True
    code, _, err = run_main(capsys)
    assert code == 1 and err.strip() == ("error: cannot reach Kaggle (no network connection): nothing was submitted; "
                                         "connect and run it again")  # fmt: skip
    kaggle.offline, kaggle.upload_status = False, 500
    code, _, err = run_main(capsys)
    assert code == 1 and err.strip() == ("error: submissions/submission.csv: the upload to Kaggle did not complete: "
                                         "nothing was submitted; run it again")  # fmt: skip
    assert "CreateSubmission" not in kaggle.calls and not project.submission_history.exists()


def test_missing_credentials_say_where_to_put_them(project: Paths, kaggle: FakeKaggle, monkeypatch, capsys) -> None:
    monkeypatch.delenv("KAGGLE_USERNAME")
    monkeypatch.delenv("KAGGLE_KEY")
    code, out, err = run_main(capsys)
    assert code == 1 and err.startswith("error: no Kaggle credentials found: set KAGGLE_USERNAME and KAGGLE_KEY")
    assert kaggle.requests == [] and out == ""


def test_credentials_never_appear_in_output_or_files(project: Paths, kaggle: FakeKaggle, monkeypatch, capsys, caplog) -> None:
    monkeypatch.delenv("KAGGLE_KEY")
    monkeypatch.delenv("KAGGLE_USERNAME")
    config = Path(KaggleApi.config)
    config.parent.mkdir()
    config.write_text(json.dumps({"username": "someone", "key": SECRET}))
    config.chmod(0o600)
    caplog.set_level("DEBUG")
    monkeypatch.setattr(submit.time, "sleep", no_sleep)
    assert run_main(capsys, "--wait")[0] == 0
    kaggle.refuse = (500, f"oops {SECRET}")
    code, out, err = run_main(capsys, "--wait", "-m", "again")
    assert code == 1 and "***" in err
    assert kaggle.auth == {"Basic " + base64.b64encode(f"someone:{SECRET}".encode()).decode()}  # the file's key was used
    assert SECRET not in out + err + caplog.text
    written = [p for p in project.root.rglob("*") if p.is_file()]
    assert project.submission_history in written and project.kaggle_metrics in written
    assert not [p for p in written if SECRET.encode() in p.read_bytes()]


def git(root: Path, *args: str) -> str:
    env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t",
           "PATH": "/usr/bin:/bin", "HOME": str(root)}  # fmt: skip
    return subprocess.run(["git", *args], cwd=root, env=env, check=True, capture_output=True, text=True).stdout.strip()


def test_the_default_message_names_the_experiment_and_its_commit(tmp_path: Path) -> None:
    git(tmp_path, "init", "-q", "-b", "main")
    (tmp_path / "dvc.lock").write_text("schema: '2.0'\nstages: {train: {params: {lr: 0.003}}}\n")
    git(tmp_path, "add", "-A")
    git(tmp_path, "commit", "-qm", "baseline")
    head = git(tmp_path, "rev-parse", "--short", "HEAD")
    assert submit.describe_workspace(tmp_path) == ("main", head)

    (tmp_path / "dvc.lock").write_text("schema: '2.0'\nstages: {train: {params: {lr: 0.01}}}\n")
    assert submit.describe_workspace(tmp_path) == ("workspace", head)  # results not in any commit

    git(tmp_path, "commit", "-qam", "an experiment's commit, as dvc exp run makes it")
    exp = git(tmp_path, "rev-parse", "HEAD")
    git(tmp_path, "update-ref", f"refs/exps/{head[:2]}/{head}/tubby-farl", exp)
    git(tmp_path, "update-ref", "refs/exps/exec/EXEC_HEAD", exp)
    git(tmp_path, "reset", "-q", "--soft", "HEAD~1")  # back on the baseline, the experiment's results in the workspace
    assert submit.describe_workspace(tmp_path) == ("tubby-farl", exp[: len(head)])
    assert submit.default_message("tubby-farl", exp[:7], {"accuracy": 0.99374, "log_loss": 0.03148}) == (
        f"tubby-farl @ {exp[:7]}: cv.accuracy 0.9937, cv.log_loss 0.0315"
    )
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / ".git").write_text("not a repository")  # git stops here instead of finding an enclosing repository
    assert submit.describe_workspace(outside) == ("workspace", "")


@pytest.mark.slow
def test_dvc_puts_the_leaderboard_beside_cv(tmp_path: Path) -> None:
    """metrics/kaggle.json is a metric of dvc.yaml: dvc metrics diff and dvc exp show list kaggle.public after cv."""
    from kagglecv.journal import write_scores
    from tests.conftest import make_project

    root = make_project(tmp_path / "project", {})
    paths = Paths(root)
    paths.cv_metrics.write_text(json.dumps({"cv": {"accuracy": 0.9937, "macro_f1": 0.9938, "log_loss": 0.0315}}))
    paths.leaderboard_metrics.write_text(json.dumps({"leaderboard": {"accuracy": 0.99722}}))
    git(root, "add", "-A")
    git(root, "commit", "-qm", "scored by cross-validation")
    write_scores(paths, 0.99722, None)
    env = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "DVC_NO_ANALYTICS": "1", "HOME": str(tmp_path)}

    def dvc(*args: str) -> str:
        done = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=root, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        return done.stdout

    diff = json.loads(dvc("metrics", "diff", "--json"))["metrics/kaggle.json"]
    assert diff["kaggle.public"]["new"] == 0.99722
    header = dvc("exp", "show", "--csv").splitlines()[0].split(",")
    metrics = header[header.index("parent") + 1 :][:5]
    assert metrics == ["cv.accuracy", "cv.macro_f1", "cv.log_loss", "leaderboard.accuracy", "kaggle.public"]


def test_the_leaderboard_metric_is_tracked_by_git_while_credentials_stay_ignored() -> None:
    def ignored(path: str) -> bool:
        return subprocess.run(["git", "check-ignore", "--no-index", "-q", path], cwd=REPO).returncode == 0

    assert not ignored("metrics/kaggle.json") and (REPO / "metrics/kaggle.json").exists()
    assert ignored("kaggle.json") and ignored("data/raw/kaggle.json") and ignored("submissions/kaggle.json")
