"""The check_params stage: every edit of params.yaml validated, even of a key no stage tracks, in a split second."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from kagglecv.params import ParamsError, load_params
from kagglecv.paths import Paths
from kagglecv.stages import check_params
from tests.conftest import REPO, make_project
from tests.test_dvc_repro import TINY, sh

HEAVY = ("torch", "timm", "albumentations", "cv2", "pandas", "sklearn")  # seconds of imports each, or more


def test_a_typo_is_named_with_its_closest_key(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    path.write_text((REPO / "params.yaml").read_text() + "lrr: 0.1\n")
    with pytest.raises(ParamsError, match=r"lrr: unknown key \(did you mean lr\?\)"):
        check_params.run(load_params(Paths(tmp_path).params), Paths(tmp_path))


def test_types_and_ranges_are_checked_but_not_the_names_that_need_timm(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    path.write_text("lr: 3e-4\nn_folds: 1\nmodel: resnet1\n")
    with pytest.raises(ParamsError) as err:
        check_params.run(load_params(Paths(tmp_path).params), Paths(tmp_path))
    assert "lr: expected a number, got '3e-4'" in str(err.value)
    assert "n_folds: 1 is too small" in str(err.value)
    assert "model" not in str(err.value)  # train checks it, with timm's registry at hand


def test_main_exits_1_with_the_loaders_message_or_prints_one_ok_line(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    command = [sys.executable, "-m", "kagglecv.stages.check_params"]
    (tmp_path / "params.yaml").write_text("seed: 1\n")
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stdout) == (0, "params.yaml: every key known, typed and in range\n")
    (tmp_path / "params.yaml").write_text("seed: 1\nlrr: 0.1\n")
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert done.stderr.startswith("error: params.yaml has 1 problem(s):\n  - lrr: unknown key (did you mean lr?)")


def test_the_stage_imports_only_its_declared_deps_and_nothing_heavy() -> None:
    """dvc.yaml lists every project module the stage imports, and none of them is slow."""
    probe = (
        "import json, sys\nfrom kagglecv.params import load_params\nfrom kagglecv.stages import check_params\ncheck_params.run(load_params())\n"
        "print(json.dumps([sorted(m.__file__ for n, m in sys.modules.items() if n.startswith('kagglecv')),"
        " sorted(n for n in sys.modules)]))"
    )  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    done = subprocess.run([sys.executable, "-c", probe], cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    files, modules = json.loads(done.stdout)
    imported = {Path(f).relative_to(REPO).as_posix() for f in files}
    stage = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]["check_params"]
    assert imported <= set(stage["deps"])  # the deps also name what params.py imports inside a function
    assert not [m for m in modules if m.split(".")[0] in HEAVY]


def test_it_is_the_first_stage_and_tracks_the_whole_params_file() -> None:
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    assert next(iter(stages)) == "check_params"  # dvc repro runs unconnected stages in the file's order
    assert stages["check_params"]["params"] == [{"params.yaml": None}]
    assert "outs" not in stages["check_params"] and "metrics" not in stages["check_params"]


@pytest.mark.slow
def test_dvc_repro_stops_on_a_key_no_stage_tracks_before_any_other_stage_runs(tmp_path: Path) -> None:
    project = make_project(tmp_path / "project", TINY)
    sh(project, "dvc", "repro", "check_params")
    lock = yaml.safe_load((project / "dvc.lock").read_text())["stages"]["check_params"]
    tracked = lock["params"]["params.yaml"]
    assert set(tracked) == set(yaml.safe_load((project / "params.yaml").read_text()))  # every key, nested ones too
    assert tracked["data"]["bad_images"] == "skip"

    with open(project / "params.yaml", "a") as f:
        f.write("lrr: 0.1\n")
    env = {**os.environ, "PYTHONPATH": str(project / "src"), "DVC_NO_ANALYTICS": "1"}
    done = subprocess.run(["dvc", "repro"], cwd=project, env=env, capture_output=True, text=True, timeout=600)
    out = done.stdout + done.stderr
    assert done.returncode != 0
    assert "lrr: unknown key (did you mean lr?)" in out
    assert "Running stage 'download'" not in out and not (project / "data/raw").exists()
