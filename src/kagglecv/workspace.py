"""A copy of this project's pipeline in another folder, as a git repository, for `dvc repro` runs
that must not touch the working tree: the benchmarks, and the end-to-end tests."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import yaml

PROJECT_FILES = ("src", ".dvc", "dvc.yaml", ".dvcignore", ".gitignore", "params.yaml", "metrics/kaggle.json",
                 "pyproject.toml", "README.md")  # fmt: skip


def copy_project(src: Path, dest: Path, overrides: dict) -> None:
    """A git repository at `dest` holding this project's pipeline, with `overrides` in params.yaml."""
    for name in PROJECT_FILES:
        if (src / name).is_dir():
            shutil.copytree(src / name, dest / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "tmp", "cache"))
        elif (src / name).exists():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(src / name, dest / name)
    override_params(dest, overrides)
    env = {**os.environ, "GIT_AUTHOR_NAME": "kagglecv", "GIT_AUTHOR_EMAIL": "kagglecv@localhost",
           "GIT_COMMITTER_NAME": "kagglecv", "GIT_COMMITTER_EMAIL": "kagglecv@localhost"}  # fmt: skip
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-qm", "project"]):
        subprocess.run(cmd, cwd=dest, env=env, check=True, capture_output=True)


def override_params(project: Path, overrides: dict) -> None:
    """Set top-level keys of `project`'s params.yaml."""
    params = yaml.safe_load((project / "params.yaml").read_text())
    (project / "params.yaml").write_text(yaml.safe_dump({**params, **overrides}, sort_keys=False))
