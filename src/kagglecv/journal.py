"""The submission journal: every submission's experiment, commit, cross-validation and leaderboard scores.

`submissions/history.csv` gets one row per submission (`python -m kagglecv.submit`), filled in
with the public score (and the private one once the competition has closed) when Kaggle has
scored it; `metrics/kaggle.json` holds the latest submission's scores (`kaggle.public`,
`kaggle.private`), so `dvc exp show` and `dvc metrics diff` put the leaderboard beside `cv.*`.
The gap printed by `python -m kagglecv.submit --history` is the public score minus the
cross-validation score Kaggle's metric compares with (`cv.score`: the competition's metric, the
first figure of `metrics/cv.json`).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import pandas as pd

from kagglecv.artifacts import write_csv, write_json
from kagglecv.paths import Paths


@dataclass(frozen=True)
class Entry:
    """One submission, as a row of `submissions/history.csv`."""

    time: str  # UTC, ISO 8601, to the second
    experiment: str  # the DVC experiment, the branch, or `workspace` (uncommitted results)
    commit: str  # short hash of the experiment's commit, or of the checked-out one
    cv_accuracy: float | None
    cv_log_loss: float | None
    public: float | None
    private: float | None
    message: str
    metric: str  # the competition's metric, which the leaderboard scores: accuracy, log_loss, roc_auc, …
    ref: int  # Kaggle's id of the submission
    cv_score: float | None = None  # cv.<metric>


COLUMNS = [f.name.replace("cv_", "cv.", 1) for f in fields(Entry)]


def read_cv(paths: Paths) -> dict[str, float]:
    """`metrics/cv.json`'s scores (empty when `evaluate` has not run)."""
    if not paths.cv_metrics.exists():
        return {}
    return json.loads(paths.cv_metrics.read_text()).get("cv", {})


def read_history(paths: Paths) -> pd.DataFrame:
    if not paths.submission_history.exists():
        return pd.DataFrame(columns=COLUMNS)
    scores = ("cv.accuracy", "cv.log_loss", "public", "private", "cv.score")  # blank: none; every other column is text as written
    return pd.read_csv(paths.submission_history, dtype={"experiment": str, "commit": str, "message": str},
                       keep_default_na=False, na_values={c: [""] for c in scores})  # fmt: skip


def append_entry(paths: Paths, entry: Entry) -> None:
    """Add `entry` to the journal and make it the latest submission (its scores, none yet, in metrics/kaggle.json)."""
    row = {name.replace("cv_", "cv.", 1): value for name, value in asdict(entry).items()}
    history, new = read_history(paths), pd.DataFrame([row], columns=COLUMNS)
    history = pd.concat([history, new], ignore_index=True) if len(history) else new
    write_csv(paths.submission_history, history[COLUMNS])
    write_scores(paths, entry.public, entry.private)


def record_scores(paths: Paths, ref: int, message: str, public: float | None, private: float | None) -> None:
    """Kaggle's scores for submission `ref` (`message` tells apart submissions Kaggle gave no ref, 0), into its
    journal row, and into metrics/kaggle.json if it is the latest."""
    history = read_history(paths)
    rows = (history["ref"].astype(int) == ref) & ((ref != 0) | (history["message"] == message))
    if not rows.any():
        return
    history.loc[rows, "public"] = public
    history.loc[rows, "private"] = private
    write_csv(paths.submission_history, history[COLUMNS])
    if int(history["ref"].iloc[-1]) == ref:
        write_scores(paths, public, private)


def write_scores(paths: Paths, public: float | None, private: float | None) -> None:
    scores = {name: value for name, value in (("public", public), ("private", private)) if value is not None}
    write_json(paths.kaggle_metrics, {"kaggle": scores})


def gap_table(history: pd.DataFrame) -> pd.DataFrame:
    """The journal with `gap`: public minus the comparable cross-validation score (blank until scored)."""
    table = history.copy()
    table["cv"] = pd.to_numeric(table["cv.score"], errors="coerce")
    table["gap"] = pd.to_numeric(table["public"], errors="coerce") - table["cv"]
    columns = ["time", "experiment", "commit", "metric", "cv", "public", "gap", "private", "message"]
    return table[columns]


def format_history(paths: Paths) -> str:
    """The journal as a table, oldest first, with each submission's cv-vs-public gap and the mean gap."""
    history = read_history(paths)
    if history.empty:
        return f"{paths.submission_history}: no submissions yet (python -m kagglecv.submit)"
    table = gap_table(history)
    text = table.to_string(index=False, na_rep="", float_format=lambda x: f"{x:.5g}")
    scored = table["gap"].dropna()
    if len(scored):
        text += (f"\n{len(scored)} scored submission(s): public - cv gap mean {scored.mean():+.4f}, "
                 f"latest {scored.iloc[-1]:+.4f}")  # fmt: skip
    return text


def as_score(text: str | None) -> float | None:
    """Kaggle's score text ('0.99722'; '' or None while hidden or pending) as a number."""
    try:
        value = float(text) if text not in (None, "") else None
    except ValueError:
        return None
    return value if value is not None and math.isfinite(value) else None


def read_scores(path: Path) -> dict[str, float]:
    return json.loads(path.read_text()).get("kaggle", {}) if path.exists() else {}
