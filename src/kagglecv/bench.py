"""`python -m kagglecv.bench`: the pipeline's speed against the hardware's limit.

On an MNIST-shaped workload (60,000 grey 28x28 uint8 images, 10 classes, made on the fly) with
the default model, augmentation and batch size from params.yaml, it measures, interleaved so a
ratio is taken side by side in one run and each figure is a median over `--repeats`:
- `train_images_per_s`: the train stage's own code (`loaders.train_batches` feeding
  `engine.train_one_epoch`), steady state;
- `compute_limit_images_per_s`: forward, backward and optimiser step on one batch already on
  the device, in a tight loop;
- `naive_images_per_s`: the tutorials' recipe: a PIL image per sample through torchvision's
  RandomAffine (the same shifts, rotations and zooms), ToTensor and Normalize in a DataLoader;
- `predict_images_per_s`, `peak_rss_mb` of this process, and `noop_repro_s` (`dvc repro` with
  nothing to do, in a temporary copy of the project).
Writes `benchmarks/results.json` and the matching section of `BENCHMARKS.md`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import statistics
import subprocess
import tempfile
import time
from itertools import islice
from pathlib import Path

import numpy as np
import torch

from kagglecv import bench_photo
from kagglecv.bench_timing import (
    REPORT,
    figure_table,
    interleave,
    replace_section,
    fresh_trainer,
    machine_description,
    sync,
    time_compute_limit,
    time_stage_path,
)
from kagglecv.engine import Trainer, predict_probs, select_precision
from kagglecv.loaders import eval_batches
from kagglecv.memory import peak_rss_mb
from kagglecv.params import Params, load_params
from kagglecv.transforms import resolve_augment
from kagglecv.workspace import copy_project

RESULTS = Path("benchmarks/results.json")
MEAN, STD = torch.tensor([0.5]), torch.tensor([0.25])


def make_workload(n: int, size: int = 28, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, size, size, 1), dtype=np.uint8), rng.integers(0, 10, n)


class _NaiveDataset(torch.utils.data.Dataset):
    """The tutorials' dataset: one PIL image per sample through torchvision transforms."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, affine: NaiveAffine) -> None:
        import torchvision.transforms as T

        self.images, self.labels = images[..., 0], labels
        side = images.shape[1]
        self.transform = T.Compose([
            T.RandomAffine(affine.degrees, translate=(affine.shift / side, affine.shift / side), scale=affine.scale),
            T.ToTensor(), T.Normalize((0.5,), (0.25,)),
        ])  # fmt: skip

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        from PIL import Image

        return self.transform(Image.fromarray(self.images[i])), int(self.labels[i])


def time_naive(params, precision, images, labels, steps: int, trainer: Trainer, affine: NaiveAffine) -> float:
    """Images/s of the tutorials' recipe: PIL images through torchvision transforms in a DataLoader."""
    model, optimizer, loss_fn = trainer.model, trainer.optimizer, trainer.loss_fn
    model.train()
    loader = torch.utils.data.DataLoader(_NaiveDataset(images, labels, affine), batch_size=params.batch_size,
                                         shuffle=True, num_workers=params.num_workers)  # fmt: skip
    seen = 0
    sync(precision)
    start = time.perf_counter()
    for x, y in islice(loader, steps):
        x, y = x.to(precision.device), y.to(precision.device)
        with torch.autocast(precision.device.type, dtype=precision.amp_dtype, enabled=precision.amp_dtype is not None):
            loss = loss_fn(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        seen += len(y)
    sync(precision)
    return seen / (time.perf_counter() - start)


@dataclasses.dataclass(frozen=True)
class NaiveAffine:
    """The augment spec's Affine as torchvision's RandomAffine replays it on the naive side."""

    shift: int = 0  # the largest whole-pixel shift
    degrees: float = 0.0  # rotations in [-degrees, degrees]
    scale: tuple[float, float] | None = None


def naive_affine_of(spec: list[dict]) -> NaiveAffine:
    """The largest shift, rotation and zoom range of the augment spec's Affine entries."""
    affines = [e["Affine"] for e in spec if "Affine" in e]
    shifts = [abs(int(v)) for v in re.findall(r"-?\d+", json.dumps([a.get("translate_px") for a in affines]))]
    degrees = [abs(float(v)) for a in affines for v in np.atleast_1d(a.get("rotate", 0))]
    scales = [float(v) for a in affines if "scale" in a for v in np.atleast_1d(a["scale"])]
    return NaiveAffine(max(shifts, default=0), max(degrees, default=0.0), (min(scales), max(scales)) if scales else None)


def time_noop_repro(repeats: int) -> float:
    """Median seconds of `dvc repro` with nothing to do, in a tiny temporary copy of this project."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        copy_project(Path.cwd(), root, {"n_folds": 2, "epochs": 1, "img_size": 8})
        env = {**os.environ, "PYTHONPATH": str(root / "src")}
        subprocess.run(["dvc", "repro", "-q"], cwd=root, env=env, check=True, capture_output=True)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            subprocess.run(["dvc", "repro"], cwd=root, env=env, check=True, capture_output=True)
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def run(
    params: Params, *, n_images: int = 60_000, repeats: int = 12, steps: int = 60, device: str | None = None,
    repro: bool = True,
) -> dict:
    """Measure everything (see the module docstring); return the results dictionary.

    `repro=False` leaves out `noop_repro_s` (None), which needs a first real `dvc repro`.
    """
    torch.manual_seed(params.seed)
    params = dataclasses.replace(params, img_size=28, cache_size=28)  # the MNIST shape
    precision = select_precision(params.amp, device)
    images, labels = make_workload(n_images)
    affine = naive_affine_of(resolve_augment(params.augment, params.img_size))
    trainer, naive_trainer = (
        fresh_trainer(params, precision, steps_per_epoch=n_images // params.batch_size, num_classes=10, in_chans=1)
        for _ in range(2)
    )  # fmt: skip
    timed = dict(steps=steps, trainer=trainer, mean=MEAN, std=STD)
    runs = interleave({
        "train": lambda r: time_stage_path(params, precision, images, labels, epoch=r + 1, **timed),
        "limit": lambda r: time_compute_limit(params, precision, images, labels, **timed),  # the same model
        "naive": lambda r: time_naive(params, precision, images, labels, steps, naive_trainer, affine),
    }, repeats)  # fmt: skip
    fast, limit, naive = runs["train"], runs["limit"], runs["naive"]
    test = images[:10_000]
    predict = []
    for _ in range(repeats):
        sync(precision)
        start = time.perf_counter()
        predict_probs(trainer.eval_model, eval_batches(test, batch_size=512, device=precision.device),
                      precision=precision, mean=MEAN, std=STD)  # fmt: skip
        predict.append(len(test) / (time.perf_counter() - start))
    train_ips, limit_ips, naive_ips = (statistics.median(v) for v in (fast, limit, naive))
    # Ratios: the median of each repetition's own ratio, its two sides measured back to back.
    efficiency = statistics.median(a / b for a, b in zip(fast, limit))
    speedup = statistics.median(a / b for a, b in zip(fast, naive))
    return {
        "train_images_per_s": round(train_ips, 1),
        "compute_limit_images_per_s": round(limit_ips, 1),
        "efficiency": round(efficiency, 3),
        "naive_images_per_s": round(naive_ips, 1),
        "speedup_vs_naive": round(speedup, 2),
        "predict_images_per_s": round(statistics.median(predict), 1),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "noop_repro_s": round(time_noop_repro(repeats), 2) if repro else None,
        "workload": {"images": n_images, "shape": [28, 28, 1], "classes": 10, "model": params.model,
                     "batch_size": params.batch_size, "augment": resolve_augment(params.augment, params.img_size), "loader": params.loader,
                     "precision": str(precision.amp_dtype or torch.float32).removeprefix("torch."),
                     "repeats": repeats, "steps_per_repeat": steps},  # fmt: skip
        "machine": machine_description(precision),
    }


def write_report(results: dict, results_path: Path = RESULTS, report_path: Path = REPORT) -> None:
    """Write the JSON and replace this device's section of BENCHMARKS.md (other sections stay)."""
    from kagglecv.artifacts import write_json

    device = results["machine"]["device"]
    write_json(results_path if device == "cpu" else results_path.with_name("results-gpu.json"), results)
    replace_section(report_path, f"bench:{'cpu' if device == 'cpu' else 'gpu'}", format_section(results))


def format_section(r: dict) -> str:
    m, w = r["machine"], r["workload"]
    table = figure_table(r, ("train_images_per_s", "compute_limit_images_per_s", "efficiency", "naive_images_per_s",
                             "speedup_vs_naive", "predict_images_per_s", "peak_rss_mb", "noop_repro_s"))  # fmt: skip
    return (
        f"## {m['device']} ({m['cpu']}, {m['cores']} cores), {m['date']}\n\n"
        f"torch {m['torch']}, {m['threads']} threads, Python {m['python']}; model `{w['model']}`, batch {w['batch_size']}, "
        f"{w['precision']}, loader `{w['loader']}`, {w['images']:,} images of 28x28x1; each figure the median of "
        f"{w['repeats']} interleaved repetitions of {w['steps_per_repeat']} steps.\n\n"
        f"{table}\n\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workload", choices=("mnist", "photo"), default="mnist",
                        help="mnist: 28x28 grey arrays; photo: JPEG photos decoded through the cache")  # fmt: skip
    parser.add_argument("--images", type=int, default=None, help="default: 60,000 (mnist), 3,000 (photo)")
    parser.add_argument("--repeats", type=int, default=None, help="default: 12 (mnist), 5 (photo)")
    parser.add_argument("--steps", type=int, default=None, help="training steps per repetition; default 60 (mnist), 8 (photo)")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when present)")
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args()
    if args.workload == "photo":
        results = bench_photo.run(load_params(), n_images=args.images or 3_000, repeats=args.repeats or 5,
                                  steps=args.steps or 8, device=args.device)  # fmt: skip
    else:
        results = run(load_params(), n_images=args.images or 60_000, repeats=args.repeats or 12, steps=args.steps or 60,
                      device=args.device)  # fmt: skip
    width = max(map(len, results))
    for key, value in results.items():
        if not isinstance(value, dict):
            print(f"{key:<{width}}  {value}")
    if not args.no_write:
        if args.workload == "photo":
            path = bench_photo.write_report(results)
            print(f"wrote {path} and {REPORT}")
        else:
            write_report(results)
            print(f"wrote {RESULTS} and {REPORT}")


if __name__ == "__main__":
    main()
