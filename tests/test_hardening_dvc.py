"""Under the real `dvc repro`, a failing stage leaves the previous submission and scores in place."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.conftest import make_project
from tests.hardening_fixtures import snapshot
from tests.test_dvc_repro import TINY, sh

KEPT = ("submissions/submission.csv", "predictions/test_probs.csv", "metrics/cv.json", "metrics/leaderboard.json")


def dvc_fails(cwd: Path, *args: str) -> str:
    env = {**os.environ, "PYTHONPATH": str(cwd / "src"), "DVC_NO_ANALYTICS": "1"}
    done = subprocess.run(["dvc", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode != 0, done.stdout + done.stderr
    return done.stdout + done.stderr


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return make_project(tmp_path / "project", TINY)


@pytest.mark.slow
def test_failed_train_or_predict_under_dvc_repro_keeps_the_previous_submission_and_scores(project: Path) -> None:
    sh(project, "dvc", "repro")
    good = snapshot(project, KEPT)
    assert set(good) == set(KEPT)
    sh(project, "git", "add", "-A")
    sh(project, "git", "commit", "-qm", "baseline")

    params = (project / "params.yaml").read_text()
    (project / "params.yaml").write_text(params.replace("lr: 0.003", "lr: 1.0e+30"))
    out = dvc_fails(project, "repro")
    assert "loss became nan" in out and "lower lr" in out
    assert snapshot(project, KEPT) == good  # DVC removed train's own outputs; downstream ones stay

    sh(project, "git", "checkout", "params.yaml")
    sh(project, "dvc", "repro")
    assert snapshot(project, KEPT) == good  # the same params give the same files again
    assert "Data and pipelines are up to date" in sh(project, "dvc", "status")

    (project / "models/fold0.pt").write_bytes(b"not a checkpoint")
    dvc_fails(project, "repro", "--single-item", "--force", "predict")
    assert snapshot(project, KEPT) == good  # persist: DVC left predict's outputs for the atomic writers to replace

    sh(project, "dvc", "checkout", "--force")
    sh(project, "dvc", "repro", "--single-item", "--force", "predict")
    assert snapshot(project, KEPT) == good
    assert "Data and pipelines are up to date" in sh(project, "dvc", "status")
