"""Same seed, same params: folds, out-of-fold probabilities, metrics and submission repeat byte for byte."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from kagglecv.runtime import use_deterministic_algorithms
from tests.conftest import REPO
from tests.hardening_fixtures import make_project, run_pipeline, sha256, truncate

# Everything the pipeline writes except metrics/train*.json, which record minutes, seconds and images per second.
COMPARED = (
    "data/folds.csv", "data/ingest_report.csv", "predictions/oof.csv", "metrics/cv.json", "metrics/cv_folds.json",
    "plots/confusion.csv",
    "submissions/submission.csv", "predictions/test_probs.csv", "metrics/leaderboard.json",
)  # fmt: skip
RUN = "import sys, pathlib, tests.hardening_fixtures as f; f.run_pipeline(pathlib.Path(sys.argv[1]))"


def make(tmp_path: Path, name: str, **params: object) -> Path:
    """A competition with an augmentation, a CNN, and one truncated training image to leave out."""
    project = make_project(
        tmp_path / name, model="kcv_cnn", epochs=2, augment=[{"Affine": {"translate_px": {"x": [-2, 2]}, "p": 1.0}}],
        **params,
    )  # fmt: skip
    truncate(project / "data/raw/train/4.png")
    return project


def hashes(project: Path) -> dict[str, str]:
    return {name: sha256(project / name) for name in COMPARED}


def weights(project: Path) -> list[dict[str, torch.Tensor]]:
    return [torch.load(p, weights_only=False)["state_dict"] for p in sorted((project / "models").glob("fold*.pt"))]


@pytest.mark.slow
def test_two_cpu_runs_in_separate_processes_write_identical_artifacts(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(REPO)])}
    projects = [make(tmp_path, name) for name in ("first", "second")]
    for project in projects:
        done = subprocess.run([sys.executable, "-c", RUN, str(project)], env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
    first, second = (hashes(p) for p in projects)
    assert first == second
    assert "train/4.png" in (projects[0] / "data/ingest_report.csv").read_text()
    for a, b in zip(weights(projects[0]), weights(projects[1]), strict=True):
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_the_deterministic_param_turns_on_deterministic_algorithms(tmp_path: Path) -> None:
    try:
        reference = make(tmp_path, "reference")
        run_pipeline(reference)
        assert not torch.are_deterministic_algorithms_enabled()
        strict = make(tmp_path, "strict", deterministic=True)
        run_pipeline(strict)  # train calls use_deterministic_algorithms(params.deterministic)
        assert torch.are_deterministic_algorithms_enabled()
        assert torch.is_deterministic_algorithms_warn_only_enabled()  # an op with no such kernel warns, naming itself
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
        assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
        assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
        assert hashes(strict) == hashes(reference)  # on the CPU the flag changes no result
    finally:
        use_deterministic_algorithms(False)
    assert torch.backends.cudnn.benchmark and torch.backends.cuda.matmul.allow_tf32  # off: the fastest GPU kernels
