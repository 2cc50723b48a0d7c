"""Experiments in parallel through DVC's queue: `dvc exp run --queue`, then `dvc queue start -j 2`.

The competition is one of image files, so the experiments, each in DVC's own copy of the workspace, must
find the images the workspace decoded (data/cache/) rather than decode them again."""

from __future__ import annotations

import csv
import io
import os
import subprocess
import time

import pytest
import yaml

from kagglecv.bench_photo import write_photo_competition
from tests.conftest import REPO, make_project
from tests.test_dvc_repro import TINY, sh


def experiments(project) -> list[dict]:
    """`dvc exp show`'s rows of experiments (not the workspace or the baseline commit)."""
    rows = list(csv.DictReader(io.StringIO(sh(project, "dvc", "exp", "show", "--csv"))))
    return [row for row in rows if row["typ"] not in ("workspace", "baseline")]


@pytest.mark.slow
def test_two_queued_experiments_run_at_once_and_land_with_their_own_metrics(tmp_path):
    competition = write_photo_competition(tmp_path / "competition", n_train=48, n_test=16, size=40, n_classes=3)
    data = {**yaml.safe_load((REPO / "params.yaml").read_text())["data"], "source": "local", "path": str(competition)}
    project = make_project(tmp_path / "project", {**TINY, "data": data})
    sh(project, "dvc", "repro")
    decoded = sorted(path.name for path in (project / "data/cache").glob("images-*.npy"))
    assert len(decoded) == 2  # the training and the test images
    sh(project, "git", "add", "-A")
    sh(project, "git", "commit", "-qm", "baseline")
    for lr in ("0.01", "0.02"):
        sh(project, "dvc", "exp", "run", "--queue", "-S", f"lr={lr}")
    env = {**os.environ, "PYTHONPATH": str(project / "src"), "DVC_NO_ANALYTICS": "1"}
    # The workers it starts outlive it holding its stdout: so no pipe, or reading it never ends.
    subprocess.run(["dvc", "queue", "start", "-j", "2"], cwd=project, env=env, check=True, timeout=600,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        deadline = time.monotonic() + 900
        while any(word in sh(project, "dvc", "queue", "status") for word in ("Queued", "Running")):
            assert time.monotonic() < deadline, sh(project, "dvc", "queue", "status")
            time.sleep(5)
    finally:
        sh(project, "dvc", "queue", "stop")
    status = sh(project, "dvc", "queue", "status")
    assert status.count("Success") == 2, status
    rows = experiments(project)
    assert sorted(float(row["lr"]) for row in rows) == [0.01, 0.02]
    assert all(0.0 < float(row["cv.accuracy"]) <= 1.0 for row in rows)
    assert len({row["cv.log_loss"] for row in rows}) == 2  # each its own metrics, not the baseline's
    for row in rows:  # the data stages' outputs came from DVC's cache into the experiment's copy
        log = sh(project, "dvc", "queue", "logs", row["Experiment"])
        assert "Stage 'download' didn't change, skipping" in log and "Stage 'split' didn't change, skipping" in log
        assert "Running stage 'train'" in log
        assert "decoded into" not in log, log  # the images of the workspace's data/cache, not decoded again
        for name in decoded:
            assert f"decoded before, in {project.resolve() / 'data/cache' / name}" in log, log
    assert sorted(path.name for path in (project / "data/cache").glob("images-*.npy")) == decoded
