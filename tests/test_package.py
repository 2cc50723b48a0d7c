"""`python -m kagglecv.package`: a code-competition bundle whose notebook reproduces `predict`'s submission."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from kagglecv import package
from kagglecv.package import PackageError, build_bundle, lacking_from_image, notebook, slug, write_kernel
from kagglecv.paths import Paths
from tests.conftest import REPO, make_project

TINY = {"n_folds": 2, "epochs": 2, "img_size": 8, "batch_size": 32, "patience": 1, "warmup_epochs": 0}


def test_slugs_follow_kaggles_rules() -> None:
    assert slug("Dog Breed Identification kagglecv models") == "dog-breed-identification-kagglecv-models"
    long = slug("x" * 45 + " kagglecv models")
    assert len(long) <= 50 and not long.endswith("-")


def test_only_imported_dependencies_missing_from_kaggles_image_are_bundled() -> None:
    requirements = ["torch==2.14.1", "dvc>=3.50,<4", "tqdm>=4.66", "pytest>=8; extra == 'dev'", "pyyaml>=6"]
    assert lacking_from_image(requirements, {"torch", "tqdm", "yaml"}) == []  # dvc is not imported by predict
    assert lacking_from_image(requirements, {"torch", "dvc"}) == ["dvc"]  # imported and not in the image
    assert lacking_from_image(["opencv_python_headless>=4.9"], {"cv2"}) == []  # names compared as pip does
    assert lacking_from_image(["setuptools>=70.1"], {"_distutils_hack", "setuptools"}) == []  # the image has it


def test_the_wheels_requirements_are_read_from_its_metadata(tmp_path: Path) -> None:
    import zipfile

    wheel = tmp_path / "kagglecv-0.1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("kagglecv-0.1.0.dist-info/METADATA", "Name: kagglecv\nRequires-Dist: torch==2.14.1\n"
                    "Requires-Dist: pytest>=8; extra == \"dev\"\n")  # fmt: skip
    assert package.wheel_requirements(wheel) == ["torch==2.14.1", 'pytest>=8; extra == "dev"']


def test_the_kernel_metadata_names_the_competition_and_dataset_internet_off_gpu_on(tmp_path: Path) -> None:
    write_kernel(tmp_path / "kernel", owner="someone", competition="digit-recognizer", dataset_id="someone/dr-models")
    metadata = json.loads((tmp_path / "kernel/kernel-metadata.json").read_text())
    assert metadata["id"] == "someone/digit-recognizer-kagglecv-predict"
    assert (metadata["competition_sources"], metadata["dataset_sources"]) == (["digit-recognizer"], ["someone/dr-models"])
    assert (metadata["enable_internet"], metadata["enable_gpu"], metadata["code_file"]) == (False, True, "predict.ipynb")
    script = (tmp_path / "kernel/predict.py").read_text()
    assert 'COMPETITION = "digit-recognizer"' in script and "$" not in script
    cell = json.loads((tmp_path / "kernel/predict.ipynb").read_text())["cells"][0]
    assert "".join(cell["source"]) == script and notebook(script)["nbformat"] == 4
    compile(script, "predict.py", "exec")


def test_no_models_no_bundle_and_other_folders_are_never_replaced(tmp_path: Path) -> None:
    project = Paths(tmp_path / "project")
    project.root.mkdir()
    project.params.write_text((REPO / "params.yaml").read_text())
    with pytest.raises(PackageError, match=r"has no fold checkpoints: run 'dvc repro train'"):
        build_bundle(project, tmp_path / "bundle", owner="someone")
    assert not (tmp_path / "bundle").exists()
    with pytest.raises(PackageError, match="exists and is not a bundle"):
        build_bundle(project, project.root, owner="someone")  # the repository itself
    assert project.params.exists()


def test_the_owner_comes_from_the_credentials_never_the_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KAGGLE_USERNAME", raising=False)
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(tmp_path))
    assert package.kaggle_owner() == package.OWNER_PLACEHOLDER
    (tmp_path / "kaggle.json").write_text(json.dumps({"username": "someone", "key": "secret-0123"}))
    assert package.kaggle_owner() == "someone"


def sh(cwd: Path, *args: str, pythonpath: Path | None = None) -> str:
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "PYTHONPATH": str(pythonpath or cwd / "src")}
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, f"{' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout + done.stderr


@pytest.mark.slow
def test_the_bundle_reproduces_the_pipelines_submission_without_the_repository(tmp_path: Path) -> None:
    data = {**yaml.safe_load((REPO / "params.yaml").read_text())["data"], "competition": "digit-recognizer"}
    project = make_project(tmp_path / "project", {**TINY, "data": data})
    sh(project, "dvc", "repro")
    sh(project, sys.executable, "-m", "kagglecv.package", str(tmp_path / "bundle"), "--owner", "someone")

    dataset = tmp_path / "bundle/dataset"
    assert sorted(p.name for p in dataset.iterdir()) == [
        "dataset-metadata.json", "fold0.pt", "fold1.pt", "kagglecv-0.1.0-py3-none-any.whl", "oof.csv", "params.yaml",
        "thresholds.json",
    ]  # fmt: skip
    assert json.loads((dataset / "dataset-metadata.json").read_text())["id"] == "someone/digit-recognizer-kagglecv-models"

    (project / "models").rename(project / "models.away")  # the notebook must use the bundle's models
    data_before = {p: p.stat().st_mtime_ns for p in (project / "data").rglob("*")}
    out = sh(project, sys.executable, str(tmp_path / "bundle/kernel/predict.py"), "--input", "data/raw", "--output", "out.csv")
    assert (project / "out.csv").read_bytes() == (project / "submissions/submission.csv").read_bytes(), out
    assert not (project / "models").exists()
    assert {p: p.stat().st_mtime_ns for p in (project / "data").rglob("*")} == data_before  # Kaggle's input is read-only


def load_kernel(tmp_path: Path, kaggle_input: Path):
    """The notebook's script as a module, with Kaggle's input folder at `kaggle_input`."""
    import importlib.util

    write_kernel(tmp_path / "kernel", owner="someone", competition="digit-recognizer", dataset_id="someone/dr-models")
    spec = importlib.util.spec_from_file_location("kernel_predict", tmp_path / "kernel/predict.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.KAGGLE_INPUT = kaggle_input
    return module


@pytest.mark.parametrize("mount", ["dr-models", "datasets/someone/dr-models"])
def test_on_kaggle_the_notebook_finds_the_competition_and_the_bundle_where_kaggle_mounts_them(
    tmp_path: Path, mount: str
) -> None:  # fmt: skip
    kaggle_input = tmp_path / "kaggle/input"
    kernel = load_kernel(tmp_path, kaggle_input)
    with pytest.raises(SystemExit, match="no bundle found"):
        kernel.find_bundle()
    with pytest.raises(SystemExit, match="'digit-recognizer' is not under"):
        kernel.find_input()
    bundle = kaggle_input / mount
    bundle.mkdir(parents=True)
    for name in ("kagglecv-0.1.0-py3-none-any.whl", "fold0.pt", "params.yaml"):
        (bundle / name).touch()
    (kaggle_input / "digit-recognizer").mkdir()
    assert kernel.find_bundle() == bundle
    assert kernel.find_input() == kaggle_input / "digit-recognizer"
    kernel.COMPETITION = ""  # packaged without data.competition
    with pytest.raises(SystemExit, match="names no competition .*: pass --input DIR"):
        kernel.find_input()
