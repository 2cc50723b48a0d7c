"""Submit to Kaggle from the pipeline, and keep the journal of what scored what.

`python -m kagglecv.submit [-m MESSAGE] [--file F] [--wait]` checks the submission
(`submissions/submission.csv`, or `--file`) with the submission checker, and only if it passes
submits it to `data.competition` with the official Kaggle client library, with a message naming
the experiment and commit unless `-m` gives one. The submission is added to the journal,
`submissions/history.csv` (`kagglecv.journal`); with `--wait` the command polls Kaggle (with
backoff, for at most `--timeout` minutes) until the submission is scored and records the public
score, and the private one once the competition has closed, in the journal and in
`metrics/kaggle.json`. `--refresh` fetches the scores of every journal entry again (private
scores appear when a competition closes); `--history` prints the journal with each
submission's cv-vs-public gap.

Credentials come from `KAGGLE_USERNAME`/`KAGGLE_KEY` or `~/.kaggle/kaggle.json`, through the
client library; they are never printed, logged or written. Kaggle's refusals (rules not accepted,
daily limit reached, competition closed, bad credentials) stop with one line saying what to do.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import json
import logging
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

import requests

from kagglecv.data import CompetitionError
from kagglecv.journal import Entry, append_entry, as_score, format_history, read_cv, read_history, record_scores
from kagglecv.params import ParamsError, load_params
from kagglecv.paths import Paths
from kagglecv.runtime import setup_logging
from kagglecv.sources import SourceError, kaggle_api
from kagglecv.submission import SubmissionError, print_check, read_reference
from kagglecv.submission_check import check_submission

if TYPE_CHECKING:
    from kaggle.api.kaggle_api_extended import KaggleApi
    from kagglesdk.competitions.types.competition_api_service import ApiSubmission

log = logging.getLogger("kagglecv.submit")

POLL_FIRST_S = 5.0  # first wait for Kaggle's score; doubled after each poll up to POLL_MAX_S
POLL_MAX_S = 60.0
TIMEOUT_MIN = 20.0  # --wait gives up after this many minutes (--timeout)
REFRESH_PAGE = 100  # --refresh looks for the journal's submissions among this many of the latest


class SubmitError(RuntimeError):
    """Nothing (more) can be done with Kaggle; the message says why and what to do."""


def secrets() -> list[str]:
    """Every credential value the client may use: never to be shown, even inside Kaggle's own messages."""
    with contextlib.redirect_stdout(io.StringIO()):  # importing the client authenticates, printing set-up help
        from kaggle.api.kaggle_api_extended import KaggleApi
    values = [os.environ.get(name, "") for name in ("KAGGLE_KEY", "KAGGLE_API_TOKEN")]
    for config in {Path(KaggleApi.config), Path.home() / ".kaggle/kaggle.json"}:  # the client's, the SDK's
        with contextlib.suppress(OSError, ValueError, AttributeError):
            values.append(str(json.loads(config.read_text()).get("key", "")))
    return [v for v in values if len(v) >= 4]


def scrub(text: str) -> str:
    for secret in secrets():
        text = text.replace(secret, "***")
    return text


def kaggle_failure(err: requests.RequestException, competition: str) -> SubmitError:
    """One line for Kaggle's refusal `err`, and what to do about it."""
    response = getattr(err, "response", None)
    status = getattr(response, "status_code", None)
    said = " ".join(scrub(str(err.args[0]) if err.args else "").split())  # one line, whatever Kaggle sent
    page = f"https://www.kaggle.com/competitions/{competition}"
    if status is None:
        return SubmitError("cannot reach Kaggle (no network connection): nothing was submitted; connect and run it again")
    if status == 401:
        return SubmitError("Kaggle rejected the credentials (HTTP 401): check KAGGLE_USERNAME and KAGGLE_KEY or "
                           "~/.kaggle/kaggle.json, or create a new API token at https://www.kaggle.com/settings")  # fmt: skip
    if re.search(r"daily|allowance|limit|too many", said, re.IGNORECASE) or status == 429:
        return SubmitError(f"Kaggle's daily submission limit for {competition!r} is reached: nothing was submitted; "
                           f"submit again after it resets at 00:00 UTC (Kaggle said: {said})")  # fmt: skip
    if re.search(r"rules", said, re.IGNORECASE) or status == 403:
        return SubmitError(f"Kaggle refused the submission to {competition!r} (HTTP {status}): accept the competition's "
                           f"rules at {page}/rules, then submit again")  # fmt: skip
    if re.search(r"ended|closed|deadline|late submission|no longer", said, re.IGNORECASE) or status == 404:
        return SubmitError(f"{competition!r} takes no submissions (HTTP {status}: {said or 'not found'}): the "
                           f"competition has closed, or data.competition is not its slug ({page})")  # fmt: skip
    return SubmitError(f"Kaggle answered HTTP {status} for {competition!r}: {said}; try again later")


@contextlib.contextmanager
def talking_to_kaggle(competition: str) -> Iterator[None]:
    """Kaggle's errors as `SubmitError`; the client's own prints (progress, set-up help) kept off the output."""
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    except requests.RequestException as err:
        raise kaggle_failure(err, competition) from None
    except SourceError as err:
        raise SubmitError(str(err)) from None


def git(root: Path, *args: str) -> bytes | None:
    try:
        done = subprocess.run(["git", *args], cwd=root, capture_output=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode == 0 else None


def describe_workspace(root: Path) -> tuple[str, str]:
    """(experiment, commit) of the results in the workspace: the DVC experiment whose dvc.lock is the
    workspace's, else the checked-out branch when its dvc.lock is, else `workspace` (uncommitted) on it."""
    head = git(root, "rev-parse", "--short", "HEAD")
    if head is None:
        return "workspace", ""
    lock = (root / "dvc.lock").read_bytes() if (root / "dvc.lock").exists() else None
    refs = (git(root, "for-each-ref", "--format=%(objectname:short) %(refname)", "refs/exps") or b"").decode()
    for line in refs.splitlines():
        sha, ref = line.split(" ", 1)
        if "/exec/" not in ref and lock is not None and git(root, "show", f"{sha}:dvc.lock") == lock:
            return ref.rsplit("/", 1)[1], sha
    if lock is not None and git(root, "show", "HEAD:dvc.lock") == lock:
        return (git(root, "rev-parse", "--abbrev-ref", "HEAD") or b"HEAD").decode().strip(), head.decode().strip()
    return "workspace", head.decode().strip()


def default_message(experiment: str, commit: str, cv: dict[str, float]) -> str:
    """`experiment @ commit: ` and the cv figures: the competition's metric (cv.json's first), accuracy, log loss."""
    scores = ", ".join(f"cv.{k} {cv[k]:.4f}" for k in dict.fromkeys([*list(cv)[:1], "accuracy", "log_loss"]) if k in cv)
    return f"{experiment} @ {commit or 'no commit'}" + (f": {scores}" if scores else "")


def check_before_upload(file: Path, paths: Paths) -> str:
    """Run the submission checker on `file`; raise unless it passes. Returns the competition's metric: the first
    figure of metrics/cv.json (`evaluate` puts it first), else accuracy for labels and log loss for probabilities."""
    if not file.is_file():
        raise SubmitError(f"{file} not found: run 'dvc repro predict' first, or name the file with --file")
    sample, classes = read_reference(None, paths)
    check = check_submission(file, sample, classes)
    if not check.ok:
        print_check(check, file, sample)
        raise SubmitError(f"{file} fails the submission checker ({len(check.problems)} problem(s)): nothing was submitted")
    cv = read_cv(paths)
    if cv:
        return next(iter(cv))
    return "accuracy" if sample.kind == "label" else "log_loss"


def upload(api: KaggleApi, competition: str, file: Path, message: str) -> int:
    """Submit `file`; Kaggle's id of the submission (0 when it names none)."""
    with talking_to_kaggle(competition):
        response = api.competition_submit(str(file), message, competition, quiet=True)
    if response.message == api.COMPETITION_SUBMIT_UPLOAD_FAILED_MESSAGE:
        raise SubmitError(f"{file}: the upload to Kaggle did not complete: nothing was submitted; run it again")
    return int(response.ref or 0)


def poll_delays(timeout_s: float) -> list[float]:
    """Seconds to wait before each poll: POLL_FIRST_S doubling up to POLL_MAX_S, `timeout_s` in all."""
    delays, delay = [], POLL_FIRST_S
    while sum(delays) + delay <= timeout_s:
        delays.append(delay)
        delay = min(2 * delay, POLL_MAX_S)
    return delays or [timeout_s]


def list_submissions(api: KaggleApi, competition: str, page_size: int = 20) -> list[ApiSubmission]:
    """Kaggle's records of the latest `page_size` submissions to `competition`, newest first."""
    with talking_to_kaggle(competition):
        return [s for s in api.competition_submissions(competition, page_size=page_size) or [] if s]


def find_submission(submissions: list[ApiSubmission], ref: int, message: str) -> ApiSubmission | None:
    """Submission `ref` among `submissions` (without a ref: the newest with `message`); None if absent."""
    return next((s for s in submissions if (s.ref == ref if ref else s.description == message)), None)


def wait_for_scores(
    api: KaggleApi, competition: str, ref: int, message: str, *, timeout_s: float,
    sleep: Callable[[float], None] | None = None,
) -> tuple[float | None, float | None]:
    """Poll until Kaggle has scored submission `ref`: (public, private) scores. `sleep`: time.sleep unless given."""
    from kagglesdk.competitions.types.submission_status import SubmissionStatus

    for delay in poll_delays(timeout_s):
        (sleep or time.sleep)(delay)
        submission = find_submission(list_submissions(api, competition), ref, message)
        if submission is None or submission.status == SubmissionStatus.PENDING:
            log.info("waiting for Kaggle to score submission %s (%.0f s)", ref, delay)
            continue
        if submission.status == SubmissionStatus.ERROR:
            why = submission.error_description or "no reason given"
            raise SubmitError(f"Kaggle could not score submission {ref}: {why}")
        return as_score(submission.public_score), as_score(submission.private_score)
    raise SubmitError(f"Kaggle has not scored submission {ref} after {timeout_s / 60:.0f} min; it is in "
                      f"submissions/history.csv: run 'python -m kagglecv.submit --refresh' later")  # fmt: skip


def read_competition_slug(paths: Paths) -> str:
    competition = load_params(paths.params).data.competition
    if not competition:
        raise SubmitError("data.competition: empty; set it to the competition's slug (kaggle.com/competitions/<slug>)")
    return competition


def submit(
    paths: Paths, *, file: Path, message: str | None, wait: bool, timeout_s: float = TIMEOUT_MIN * 60,
    api_factory: Callable[[], KaggleApi] = kaggle_api, sleep: Callable[[float], None] | None = None,
) -> Entry:  # fmt: skip
    """Check, submit and journal `file`; with `wait`, record Kaggle's scores. Returns the journal entry."""
    competition = read_competition_slug(paths)
    metric = check_before_upload(file, paths)
    experiment, commit = describe_workspace(paths.root)
    cv = read_cv(paths)
    message = message or default_message(experiment, commit, cv)
    with talking_to_kaggle(competition):
        api = api_factory()
    ref = upload(api, competition, file, message)
    entry = Entry(time=datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"), experiment=experiment, commit=commit,
                  cv_accuracy=cv.get("accuracy"), cv_log_loss=cv.get("log_loss"), public=None, private=None,
                  message=message, metric=metric, ref=ref, cv_score=cv.get(metric))  # fmt: skip
    append_entry(paths, entry)
    log.info("submitted %s to %s as %r (submission %s)", file, competition, message, ref)
    if not wait:
        return entry
    public, private = wait_for_scores(api, competition, ref, message, timeout_s=timeout_s, sleep=sleep)
    record_scores(paths, ref, message, public, private)
    log.info("Kaggle scored submission %s: public %s, private %s, cv.%s %s", ref, public, private, metric, cv.get(metric))
    return dataclasses.replace(entry, public=public, private=private)


def refresh(paths: Paths, api_factory: Callable[[], KaggleApi] = kaggle_api) -> int:
    """Fetch Kaggle's scores for every journal entry again; the number of entries updated."""
    competition = read_competition_slug(paths)
    history = read_history(paths)
    with talking_to_kaggle(competition):
        api = api_factory()
    submissions, updated = list_submissions(api, competition, page_size=REFRESH_PAGE), 0
    for ref, message in zip(history["ref"].astype(int), history["message"]):
        submission = find_submission(submissions, ref, message)
        if submission is not None and as_score(submission.public_score) is not None:
            record_scores(paths, ref, message, as_score(submission.public_score), as_score(submission.private_score))
            updated += 1
    return updated


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kagglecv.submit", description=__doc__.splitlines()[0])
    parser.add_argument("-m", "--message", help="the submission's description (default: experiment, commit and cv)")
    parser.add_argument("--file", type=Path, help="the file to submit (default: submissions/submission.csv)")
    parser.add_argument("--wait", action="store_true", help="wait for Kaggle's score and record it")
    parser.add_argument("--timeout", type=float, default=TIMEOUT_MIN, help="minutes --wait waits at most")
    action = parser.add_mutually_exclusive_group()
    action.add_argument("--history", action="store_true", help="print the journal with the cv-vs-public gap")
    action.add_argument("--refresh", action="store_true", help="fetch the journal's scores again (private: after close)")
    args = parser.parse_args(argv)
    setup_logging()
    paths = Paths()
    try:
        if args.history:
            print(format_history(paths))
        elif args.refresh:
            log.info("%d journal entries scored", refresh(paths))
        else:
            file = args.file or paths.submission
            submit(paths, file=file, message=args.message, wait=args.wait, timeout_s=args.timeout * 60)
    except (SubmitError, ParamsError, SubmissionError, CompetitionError) as err:
        print(f"error: {scrub(str(err))}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
