"""The real `dvc repro` and `dvc exp run -S lr=…` in a temporary copy of the repository."""

import json
import os
import subprocess
from pathlib import Path

import pandas as pd
import pytest
import yaml

from tests.conftest import REPO, make_project

TINY = {"n_folds": 2, "epochs": 2, "img_size": 8, "batch_size": 32, "patience": 1, "warmup_epochs": 0}
# dvc exp show's first metric columns: a leaderboard's (metrics files in dvc.yaml's order, keys in each file's order).
HEADLINE = [
    "cv.accuracy", "cv.macro_f1", "cv.log_loss", "leaderboard.accuracy",
    "train.minutes", "train.epochs", "train.time_limit", "train.cut",
]  # fmt: skip


def sh(cwd: Path, *args: str) -> str:
    env = {**os.environ, "PYTHONPATH": str(cwd / "src"), "DVC_NO_ANALYTICS": "1", "GIT_AUTHOR_NAME": "t",
           "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}  # fmt: skip
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout + done.stderr


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    return make_project(tmp_path_factory.mktemp("project"), TINY)


@pytest.mark.slow
def test_dvc_repro_then_exp_run_reruns_only_downstream_stages(project):
    sh(project, "dvc", "repro")
    submission = pd.read_csv(project / "submissions/submission.csv", dtype=str)
    sample = pd.read_csv(project / "data/raw/sample_submission.csv", dtype=str)
    assert list(submission.columns) == list(sample.columns)
    assert submission["ImageId"].tolist() == sample["ImageId"].tolist()
    cv = json.loads((project / "metrics/cv.json").read_text())["cv"]
    assert cv["accuracy"] > 0.5
    assert "accuracy" in json.loads((project / "metrics/leaderboard.json").read_text())["leaderboard"]
    assert "Data and pipelines are up to date" in sh(project, "dvc", "status")

    sh(project, "git", "add", "-A")
    sh(project, "git", "commit", "-qm", "baseline")
    out = sh(project, "dvc", "exp", "run", "-S", "lr=0.01", "-S", "amp=off")  # DVC writes a bare off: a YAML boolean
    assert "Stage 'download' didn't change, skipping" in out
    assert "Stage 'split' didn't change, skipping" in out
    for stage in ("train", "evaluate", "predict"):
        assert f"Running stage '{stage}'" in out
    diff = json.loads(sh(project, "dvc", "params", "diff", "--json"))
    assert (diff["params.yaml"]["lr"]["old"], diff["params.yaml"]["lr"]["new"]) == (0.003, 0.01)
    assert diff["params.yaml"]["amp"]["old"] == "auto"
    metrics = json.loads(sh(project, "dvc", "metrics", "diff", "--json"))
    assert "cv.accuracy" in metrics["metrics/cv.json"]

    header = sh(project, "dvc", "exp", "show", "--csv").splitlines()[0].split(",")
    assert header[header.index("parent") + 1 :][: len(HEADLINE)] == HEADLINE
    assert not [column for column in header if ".folds." in column]  # per-fold detail stays off the table
    shown = sh(project, "dvc", "metrics", "show", "--json", "metrics/cv_folds.json", "metrics/train_folds.json")
    files = json.loads(shown)[""]["data"]  # "": the workspace
    assert set(files["metrics/cv_folds.json"]["data"]["cv"]["folds"]) == {"0", "1"}
    assert set(files["metrics/train_folds.json"]["data"]["train"]["folds"]) == {"0", "1"}


def test_dvc_yaml_declares_only_the_headline_files_as_metrics_in_leaderboard_order() -> None:
    dvc = yaml.safe_load((REPO / "dvc.yaml").read_text())
    stage_metrics = [next(iter(m)) for stage in dvc["stages"].values() for m in stage.get("metrics", [])]
    headline = ["metrics/cv.json", "metrics/leaderboard.json", "metrics/kaggle.json", "metrics/train.json", "metrics/predict.json"]
    assert stage_metrics + dvc["metrics"] == headline
    outs = {
        path: options for stage in dvc["stages"].values() for out in stage.get("outs", []) if isinstance(out, dict)
        for path, options in out.items()
    }  # fmt: skip
    for detail in ("metrics/cv_folds.json", "metrics/train_folds.json", "metrics/train.json"):
        assert outs[detail]["cache"] is False, detail  # in git, beside the metrics, but not in the table
