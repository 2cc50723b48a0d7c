"""The default train stage with folds one after another against folds in parallel, same machine.

    python -m kagglecv.bench_parallel [--repeats 3] [--ray] [--epochs N]
    python -m kagglecv.bench_parallel --queued-copy FOLDER [--repeats 3] [--img-size 128]

In a temporary copy of the project (the shipped params.yaml), `dvc repro split` once, then the
train stage itself (`python -m kagglecv.stages.train`) under each `parallel:` setting, the runs
interleaved and their order rotated each round so load on a shared machine falls on each alike:

- `sequential`: `folds: 1`, torch's own thread count (every core): the shipped default;
- `sequential, 1 thread`: `folds: 1, threads: 1`;
- `2 local workers`: `folds: 2, threads: 1` (one thread per worker);
- with `--ray`, `ray, 2 tasks`: the same on a private local Ray cluster (`address: local`).

CPU results depend on the thread count, so the settings with one thread per fold must give the
same bytes: after each setting's first run `predict` writes its submission, and the sha256 of
`predictions/oof.csv`, the models and the submission are recorded. Prints a table and writes
`benchmarks/parallel.json` (wall seconds per run, medians, ratios against `sequential`, hashes).
`--epochs N` trains fewer epochs than params.yaml ships: a quick check that the benchmark runs.

`--queued-copy FOLDER` times instead what a queued experiment pays for the image files under FOLDER
(a competition's data/raw): decoding them into a fresh cache (what it paid when its copy of the
workspace had no decode cache) against reading them once to fingerprint them (what it pays now that
it finds the workspace's), interleaved; writes `benchmarks/queued_copy.json`.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from kagglecv.data import IMAGE_SUFFIXES
from kagglecv.fingerprints import content_digest
from kagglecv.images import FileImages
from kagglecv.workspace import copy_project, override_params

RESULTS = Path("benchmarks/parallel.json")
SETTINGS = {
    "sequential": {"folds": 1, "backend": "local", "address": "auto", "threads": 0},
    "sequential, 1 thread": {"folds": 1, "backend": "local", "address": "auto", "threads": 1},
    "2 local workers": {"folds": 2, "backend": "local", "address": "auto", "threads": 1},
}
RAY = {"ray, 2 tasks": {"folds": 2, "backend": "ray", "address": "local", "threads": 1}}


def _stage(root: Path, module: str) -> float:
    """Wall seconds of `python -m kagglecv.stages.<module>` in `root`; its log is dropped unless it fails."""
    env = {**os.environ, "PYTHONPATH": str(root / "src")}
    begun = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", f"kagglecv.stages.{module}"], cwd=root, env=env,
                          capture_output=True, text=True)  # fmt: skip
    if done.returncode:
        raise RuntimeError(f"{module} failed in {root}:\n{done.stderr[-4000:]}")
    return time.perf_counter() - begun


def _hashes(root: Path) -> dict[str, str]:
    models = sorted((root / "models").glob("fold*.pt"))
    files = [root / "predictions/oof.csv", *models, root / "submissions/submission.csv"]
    return {str(f.relative_to(root)): hashlib.sha256(f.read_bytes()).hexdigest()[:16] for f in files}


def run(repeats: int, settings: dict[str, dict], overrides: dict | None = None) -> dict:
    """Time every setting `repeats` times (interleaved); their hashes after the first run of each."""
    with tempfile.TemporaryDirectory(prefix="kcv-parallel-") as tmp:
        root = Path(tmp)
        copy_project(Path.cwd(), root, overrides or {})
        env = {**os.environ, "PYTHONPATH": str(root / "src"), "DVC_NO_ANALYTICS": "1"}
        subprocess.run(["dvc", "repro", "split"], cwd=root, env=env, check=True, capture_output=True)
        seconds: dict[str, list[float]] = {name: [] for name in settings}
        hashes: dict[str, dict] = {}
        names = list(settings)
        for r in range(repeats):
            for name in names[r % len(names) :] + names[: r % len(names)]:
                override_params(root, {"parallel": settings[name]})
                seconds[name].append(round(_stage(root, "train"), 2))
                print(f"round {r + 1}: {name}: {seconds[name][-1]:.1f} s", flush=True)
                if name not in hashes:
                    _stage(root, "predict")
                    hashes[name] = _hashes(root)
    medians = {name: statistics.median(s) for name, s in seconds.items()}
    return {
        "date": datetime.date.today().isoformat(), "machine": platform.processor() or platform.machine(),
        "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(), "gpus": torch.cuda.device_count(),
        "repeats": repeats, "overrides": overrides or {}, "settings": settings, "seconds": seconds,
        "median_seconds": medians,
        "speedup_vs_sequential": {name: round(medians["sequential"] / m, 3) for name, m in medians.items()},
        "hashes": hashes,
    }  # fmt: skip


def format_table(result: dict) -> str:
    reference = result["hashes"].get("sequential, 1 thread")
    lines = ["| setting | wall seconds (median) | each run | speedup vs sequential | files as `sequential, 1 thread` |",
             "| --- | --- | --- | --- | --- |"]  # fmt: skip
    for name, median in result["median_seconds"].items():
        same = "yes" if result["hashes"].get(name) == reference else "no"
        runs = ", ".join(f"{s:.1f}" for s in result["seconds"][name])
        lines.append(f"| {name} | {median:.1f} | {runs} | {result['speedup_vs_sequential'][name]:.2f}x | {same} |")
    return "\n".join(lines)


def queued_copy(folder: Path, repeats: int, img_size: int) -> dict:
    """Median seconds to decode every image under `folder` into a fresh cache, and to fingerprint them."""
    paths = tuple(sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES))
    seconds: dict[str, list[float]] = {"decode": [], "fingerprint": []}
    for _ in range(repeats):
        with tempfile.TemporaryDirectory(dir=folder.parent) as cache:
            start = time.perf_counter()
            FileImages(paths, Path(cache)).load(img_size=img_size)
            seconds["decode"].append(time.perf_counter() - start)
        start = time.perf_counter()
        content_digest(paths)
        seconds["fingerprint"].append(time.perf_counter() - start)
    return {"images": len(paths), "megabytes": round(sum(p.stat().st_size for p in paths) / 1e6), "img_size": img_size,
            "seconds": seconds, "median_seconds": {k: statistics.median(v) for k, v in seconds.items()},
            "load_average": os.getloadavg(), "cores": os.cpu_count(), "machine": platform.processor() or platform.machine(),
            "date": datetime.date.today().isoformat()}  # fmt: skip


def _main() -> None:
    parser = argparse.ArgumentParser(prog="python -m kagglecv.bench_parallel", description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--ray", action="store_true", help="also time two Ray tasks on a private local cluster")
    parser.add_argument("--epochs", type=int, help="fewer epochs than params.yaml's: a quick check, not the figures")
    parser.add_argument("--queued-copy", type=Path, metavar="FOLDER", help="time decoding vs fingerprinting its images")
    parser.add_argument("--img-size", type=int, default=128, help="--queued-copy: the side to decode to")
    args = parser.parse_args()
    if args.queued_copy:
        result = queued_copy(args.queued_copy, args.repeats, args.img_size)
        (RESULTS.parent / "queued_copy.json").write_text(json.dumps(result, indent=2) + "\n")
        print(json.dumps(result["median_seconds"]), f"{result['images']} images; written to benchmarks/queued_copy.json")
        return
    overrides = {"epochs": args.epochs} if args.epochs else {}
    result = run(args.repeats, {**SETTINGS, **(RAY if args.ray else {})}, overrides)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(format_table(result))
    print(f"written to {RESULTS}")


if __name__ == "__main__":
    _main()
