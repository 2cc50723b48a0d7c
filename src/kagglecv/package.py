"""A code-competition bundle from the current models: `python -m kagglecv.package OUT_DIR [--owner USER]`.

Writes, in place of OUT_DIR (atomically):

- `OUT_DIR/dataset/`, a Kaggle dataset (`kaggle datasets create -p OUT_DIR/dataset`): the fold
  checkpoints (`fold<k>.pt`), `params.yaml`, `thresholds.json` (the decision rule `evaluate` tuned
  and `predict` applies), `oof.csv` (the out-of-fold predictions `predict` compares the test
  predictions' class shares with), this package as a wheel, the wheels of the
  dependencies the prediction imports that Kaggle's image lacks, and `dataset-metadata.json`.
- `OUT_DIR/kernel/`, a Kaggle notebook (`kaggle kernels push -p OUT_DIR/kernel`): `predict.py`,
  `predict.ipynb` (the same code in one cell) and `kernel-metadata.json` naming the competition
  and the dataset, internet off, GPU on.

`python OUT_DIR/kernel/predict.py --input DIR --output FILE` reads a competition laid out as
Kaggle mounts it and runs the `predict` stage with the bundle's models and the bundle's kagglecv:
the same submission as `dvc repro predict`, byte for byte on the same machine.
"""

from __future__ import annotations

import argparse
import email
import importlib.metadata
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from string import Template

from kagglecv.artifacts import atomic_path
from kagglecv.params import ParamsError, load_params
from kagglecv.paths import Paths
from kagglecv.runtime import main_of

log = logging.getLogger("kagglecv.package")

TEMPLATE = Path(__file__).with_name("templates") / "kernel_predict.py.tmpl"
# Distributions Kaggle's Python image ships (github.com/Kaggle/docker-python); their own dependencies come with them.
KAGGLE_IMAGE = frozenset({
    "torch", "torchvision", "timm", "albumentations", "opencv-python", "opencv-python-headless", "scikit-learn",
    "pandas", "numpy", "pyyaml", "tqdm", "pillow", "scipy", "requests", "kaggle", "setuptools", "pip",
})  # fmt: skip
PROBE = "import json, sys, kagglecv.stages.predict; print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))"
OWNER_PLACEHOLDER = "INSERT_USERNAME"


class PackageError(RuntimeError):
    """The bundle cannot be built; the message says why and what to do."""


def slug(text: str) -> str:
    """Kaggle's slug rules: lower-case letters, digits and dashes, 3 to 50 characters."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:50].rstrip("-")


def kaggle_owner() -> str:
    """The Kaggle user name of the credentials (never the key), or a placeholder to edit in the metadata."""
    name = os.environ.get("KAGGLE_USERNAME", "")
    config = Path(os.environ.get("KAGGLE_CONFIG_DIR") or Path.home() / ".kaggle") / "kaggle.json"
    if not name and config.is_file():
        try:
            name = str(json.loads(config.read_text()).get("username", ""))
        except (OSError, ValueError, AttributeError):
            name = ""
    if not name:
        log.warning("no Kaggle user name (--owner, KAGGLE_USERNAME or ~/.kaggle/kaggle.json): the metadata says %s; "
                    "replace it before uploading", OWNER_PLACEHOLDER)  # fmt: skip
    return name or OWNER_PLACEHOLDER


def last_line(text: str) -> str:
    return (text.strip().splitlines() or ["no output"])[-1]


def build_wheel(project: Path, out_dir: Path) -> Path:
    """This package's wheel, built offline from a clean copy of `project`'s sources into `out_dir`."""
    if not (project / "pyproject.toml").is_file():
        raise PackageError(f"{project / 'pyproject.toml'} not found: run python -m kagglecv.package from the repository root")
    with tempfile.TemporaryDirectory(prefix="kagglecv-wheel-") as tmp:
        for name in ("pyproject.toml", "README.md"):
            shutil.copy(project / name, Path(tmp) / name)
        shutil.copytree(project / "src", Path(tmp) / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
               "-w", str(out_dir), tmp]  # fmt: skip
        done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise PackageError(f"building the kagglecv wheel failed ({last_line(done.stderr)}): "
                           "'pip install setuptools>=70.1' and try again")  # fmt: skip
    return next(out_dir.glob("kagglecv-*.whl"))


def canonical(name: str) -> str:
    """A distribution's name as pip compares them (PEP 503): opencv_python and OpenCV-Python are one."""
    return re.sub(r"[-_.]+", "-", name).lower()


def wheel_requirements(wheel: Path) -> list[str]:
    """The Requires-Dist lines of `wheel`'s metadata."""
    with zipfile.ZipFile(wheel) as zf:
        metadata = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        return email.message_from_bytes(zf.read(metadata)).get_all("Requires-Dist") or []


def lacking_from_image(requirements: list[str], imported: set[str]) -> list[str]:
    """The requirements (distribution names) that the prediction imports and Kaggle's image does not ship."""
    modules = importlib.metadata.packages_distributions()
    imported_dists = {canonical(dist) for module in imported for dist in modules.get(module, [])}
    names = [canonical(re.split(r"[ <>=!~;\[(]", r, maxsplit=1)[0]) for r in requirements if "extra ==" not in r]
    return sorted(n for n in names if n in imported_dists and n not in KAGGLE_IMAGE)


def prediction_imports(project: Path) -> set[str]:
    """Top-level modules that importing the `predict` stage of `project` loads."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(project / "src"), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        raise PackageError(f"importing kagglecv.stages.predict failed ({last_line(done.stderr)}): fix it, then package")
    return set(json.loads(done.stdout))


def add_dependency_wheels(names: list[str], out_dir: Path) -> None:
    """The wheels of `names` (the installed versions) for Kaggle's offline notebook; pip fetches them."""
    for name in names:
        pin = f"{name}=={importlib.metadata.version(name)}"
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-q", "-d", str(out_dir), pin]
        if subprocess.run(cmd, capture_output=True).returncode != 0:
            raise PackageError(f"{pin} is not in Kaggle's image and pip could not fetch its wheel: connect to the "
                               f"network (or to a package mirror) and run python -m kagglecv.package again")  # fmt: skip
        log.info("bundled %s: Kaggle's image lacks it", pin)


def write_dataset(paths: Paths, out_dir: Path, *, dataset_id: str, competition: str) -> list[Path]:
    """The dataset folder: checkpoints, params, out-of-fold predictions, the decision thresholds `evaluate`
    tuned, wheels, metadata. Returns the checkpoints."""
    checkpoints = sorted(paths.models.glob("fold*.pt"))
    if not checkpoints:
        raise PackageError(f"{paths.models} has no fold checkpoints: run 'dvc repro train' (or dvc pull) first")
    if not paths.thresholds.exists():
        raise PackageError(f"{paths.thresholds} missing (the decision rule predict applies): run 'dvc repro evaluate' first")
    out_dir.mkdir(parents=True)
    oof = [paths.oof] if paths.oof.exists() else []  # the out-of-fold class shares predict compares with
    for path in [*checkpoints, paths.params, paths.thresholds, *oof]:
        shutil.copy2(path, out_dir / path.name)
    requirements = wheel_requirements(build_wheel(paths.root, out_dir))
    add_dependency_wheels(lacking_from_image(requirements, prediction_imports(paths.root)), out_dir)
    title = f"{competition} kagglecv models".strip()[:50]
    metadata = {"title": title, "id": dataset_id, "licenses": [{"name": "CC0-1.0"}]}
    (out_dir / "dataset-metadata.json").write_text(json.dumps(metadata, indent=2) + "\n")
    return checkpoints


def notebook(source: str) -> dict:
    """An nbformat 4 notebook of one code cell holding `source`."""
    return {
        "cells": [{"cell_type": "code", "execution_count": None, "metadata": {}, "outputs": [],
                   "source": source.splitlines(keepends=True)}],
        "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
                     "language_info": {"name": "python"}},
        "nbformat": 4, "nbformat_minor": 4,
    }  # fmt: skip


def write_kernel(out_dir: Path, *, owner: str, competition: str, dataset_id: str) -> None:
    """The notebook folder: predict.py, predict.ipynb and kernel-metadata.json (internet off, GPU on)."""
    source = Template(TEMPLATE.read_text()).substitute(competition=competition, dataset=dataset_id)
    out_dir.mkdir(parents=True)
    (out_dir / "predict.py").write_text(source)
    (out_dir / "predict.ipynb").write_text(json.dumps(notebook(source), indent=1) + "\n")
    title = f"{competition} kagglecv predict".strip()[:50]
    metadata = {
        "id": f"{owner}/{slug(title)}", "title": title, "code_file": "predict.ipynb", "language": "python",
        "kernel_type": "notebook", "is_private": True, "enable_gpu": True, "enable_tpu": False, "enable_internet": False,
        "dataset_sources": [dataset_id], "competition_sources": [competition] if competition else [],
        "kernel_sources": [], "model_sources": [],
    }  # fmt: skip
    (out_dir / "kernel-metadata.json").write_text(json.dumps(metadata, indent=2) + "\n")


def build_bundle(paths: Paths, out_dir: Path, *, owner: str) -> Path:
    """OUT_DIR/dataset and OUT_DIR/kernel from the models under `paths`; a failure leaves `out_dir` as it was."""
    params = load_params(paths.params)
    competition = params.data.competition
    if not competition:
        log.warning("data.competition is empty: the notebook's metadata names no competition to attach")
    dataset_id = f"{owner}/{slug(f'{competition} kagglecv models')}"
    if out_dir.exists() and {p.name for p in out_dir.iterdir()} - {"dataset", "kernel"}:
        raise PackageError(f"{out_dir} exists and is not a bundle (it holds more than dataset/ and kernel/): "
                           f"name a new folder")  # fmt: skip
    with atomic_path(out_dir) as tmp:
        checkpoints = write_dataset(paths, tmp / "dataset", dataset_id=dataset_id, competition=competition)
        write_kernel(tmp / "kernel", owner=owner, competition=competition, dataset_id=dataset_id)
    log.info("%s: %d fold checkpoints and kagglecv as dataset %s; notebook in %s. Upload with: kaggle datasets create "
             "-p %s, then kaggle kernels push -p %s", out_dir, len(checkpoints), dataset_id, out_dir / "kernel",
             out_dir / "dataset", out_dir / "kernel")  # fmt: skip
    return out_dir


def run_cli(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m kagglecv.package", description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path, help="the bundle's folder (replaced)")
    parser.add_argument("--owner", help="Kaggle user name in the metadata (default: the credentials')")
    args = parser.parse_args(argv)
    build_bundle(Paths(), args.out_dir, owner=args.owner or kaggle_owner())


main = main_of(run_cli, PackageError, ParamsError)

if __name__ == "__main__":
    main()
