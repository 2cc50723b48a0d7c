"""The real `dvc repro` and `dvc exp run -S lr=…` in a temporary copy of the repository."""

import json
import os
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import make_project

TINY = {"n_folds": 2, "epochs": 2, "img_size": 8, "batch_size": 32, "patience": 1, "warmup_epochs": 0}


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
