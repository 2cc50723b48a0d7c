"""A photo-scale competition made on the fly, and the photo workload of `python -m kagglecv.bench`.

`write_photo_competition` lays out a labels-CSV competition (`train/<id>.jpg`, `train_labels.csv`,
`test/<id>.jpg`, `sample_submission.csv`, `solution.csv`) of square JPEG crops of the two photographs
scikit-learn ships (`china.jpg`, `flower.jpg`, 640x427). Each class is one region of one photograph;
an image is a crop of random size and position around its region's centre, resized to `size` pixels,
with random brightness: a task a CNN learns, with the statistics of real photos (JPEG blocks, texture,
colour) so that decoding and training cost what they cost on a real competition.

    python -m kagglecv.bench_photo DIR --train 20000 --test 5000 --size 320

`run` is the photo workload of the benchmark (`python -m kagglecv.bench --workload photo`): it writes
a few thousand such JPEGs to a temporary folder and measures, interleaved and as medians, decoding
(all cores against one), training images/s of the train stage's path (from the memory-mapped cache)
against the compute limit at `img_size`, and the process's peak memory.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import torch
from sklearn.datasets import load_sample_images

from kagglecv.artifacts import write_json
from kagglecv.bench_timing import (
    REPORT,
    figure_table,
    fresh_trainer,
    interleave,
    machine_description,
    replace_section,
    time_compute_limit,
    time_stage_path,
)
from kagglecv.engine import select_precision
from kagglecv.images import FileImages, channel_stats, decode_into
from kagglecv.memory import ResidentPeak, peak_rss_mb
from kagglecv.params import Params
from kagglecv.progress import Progress
from kagglecv.transforms import resolve_augment

RESULTS = Path("benchmarks/photo.json")


def _regions(n_classes: int) -> list[tuple[int, float, float]]:
    """(photo, centre x, centre y) of each class, in [0, 1] units: a grid over both photographs."""
    per_photo = -(-n_classes // 2)
    cols = int(np.ceil(np.sqrt(per_photo * 1.5)))
    rows = -(-per_photo // cols)
    cells = [((c + 0.5) / cols, (r + 0.5) / rows) for r in range(rows) for c in range(cols)]
    return [(k % 2, *cells[k // 2]) for k in range(n_classes)]


def make_photo(photo: np.ndarray, region: tuple[float, float], size: int, rng: np.random.Generator) -> np.ndarray:
    """One (size, size, 3) RGB crop around `region` of `photo`, side 35-70 % of the photo's height."""
    h, w = photo.shape[:2]
    side = int(h * rng.uniform(0.35, 0.7))
    cx = region[0] * w + rng.normal(0, 0.04 * w)
    cy = region[1] * h + rng.normal(0, 0.04 * h)
    x0 = int(np.clip(cx - side / 2, 0, w - side))
    y0 = int(np.clip(cy - side / 2, 0, h - side))
    crop = cv2.resize(photo[y0 : y0 + side, x0 : x0 + side], (size, size), interpolation=cv2.INTER_AREA)
    return np.clip(crop.astype(np.float32) * rng.uniform(0.75, 1.25), 0, 255).astype(np.uint8)


def write_photo_competition(
    root: Path, *, n_train: int, n_test: int, size: int = 320, n_classes: int = 12, seed: int = 0, quality: int = 90
) -> Path:
    """Write the competition under `root` (see the module docstring); return `root`."""
    photos = [np.ascontiguousarray(p) for p in load_sample_images().images]  # RGB (427, 640, 3)
    regions = _regions(n_classes)
    labels = np.random.default_rng(seed).integers(0, n_classes, n_train + n_test)
    classes = [f"class_{k:02d}" for k in range(n_classes)]
    ids = [f"{i:06d}" for i in range(n_train + n_test)]
    for part in ("train", "test"):
        (root / part).mkdir(parents=True, exist_ok=True)

    def write(i: int) -> None:
        rng = np.random.default_rng([seed, i])
        photo_index, cx, cy = regions[labels[i]]
        image = make_photo(photos[photo_index], (cx, cy), size, rng)
        part = "train" if i < n_train else "test"
        ok, data = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
        assert ok
        data.tofile(root / part / f"{ids[i]}.jpg")

    with Progress(len(ids), "writing photos", unit="img") as progress, ThreadPoolExecutor(os.cpu_count()) as pool:
        for _ in pool.map(write, range(len(ids))):
            progress.update()
    named = [classes[k] for k in labels]
    pd.DataFrame({"id": ids[:n_train], "label": named[:n_train]}).to_csv(root / "train_labels.csv", index=False)
    test = pd.DataFrame({"id": ids[n_train:], "label": named[n_train:]})
    test.to_csv(root / "solution.csv", index=False)
    test.assign(label=classes[0]).to_csv(root / "sample_submission.csv", index=False)
    return root


def run(
    params: Params, *, n_images: int = 3_000, size: int = 320, img_size: int = 128, repeats: int = 5, steps: int = 8,
    device: str | None = None,
) -> dict:  # fmt: skip
    """Measure the photo workload (see the module docstring); return the results dictionary."""
    torch.manual_seed(params.seed)
    params = dataclasses.replace(params, img_size=img_size, cache_size=img_size)
    precision = select_precision(params.amp, device)
    with tempfile.TemporaryDirectory() as tmp, ResidentPeak() as resident:
        root = write_photo_competition(Path(tmp) / "raw", n_train=n_images, n_test=0, size=size)
        paths = sorted((root / "train").glob("*.jpg"))
        labels = pd.read_csv(root / "train_labels.csv", dtype=str)["label"].str[-2:].astype(int).to_numpy()
        out = np.empty((len(paths), img_size, img_size, 3), np.uint8)
        decode = {"all cores": None, "one core": 1}

        def decode_rate(workers: int | None) -> float:
            start = time.perf_counter()
            decode_into(out, paths, workers=workers)
            return len(paths) / (time.perf_counter() - start)

        decoded = interleave({name: lambda r, w=w: decode_rate(w) for name, w in decode.items()}, max(1, repeats // 2))
        del out
        images = FileImages(tuple(paths), Path(tmp) / "cache").load(img_size=img_size)  # memory-mapped
        mean, std = (torch.tensor(v) for v in channel_stats(images))
        trainer = fresh_trainer(params, precision, steps_per_epoch=len(paths) // params.batch_size,
                                num_classes=int(labels.max()) + 1, in_chans=3)  # fmt: skip
        timed = dict(steps=steps, trainer=trainer, mean=mean, std=std)
        trained = interleave({
            "train": lambda r: time_stage_path(params, precision, images, labels, epoch=r + 1, **timed),
            "limit": lambda r: time_compute_limit(params, precision, images, labels, **timed),
        }, repeats)  # fmt: skip
        del images
    fast, limit = trained["train"], trained["limit"]
    return {
        "decode_images_per_s": round(statistics.median(decoded["all cores"]), 1),
        "decode_one_core_images_per_s": round(statistics.median(decoded["one core"]), 1),
        "decode_speedup": round(statistics.median(a / b for a, b in zip(decoded["all cores"], decoded["one core"])), 2),
        "train_images_per_s": round(statistics.median(fast), 1),
        "compute_limit_images_per_s": round(statistics.median(limit), 1),
        "efficiency": round(statistics.median(a / b for a, b in zip(fast, limit)), 3),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "peak_rss_anon_mb": round(resident.anon_mb, 1),
        "workload": {"images": n_images, "source_size": size, "img_size": img_size, "classes": int(labels.max()) + 1,
                     "decoded_mb": round(n_images * img_size * img_size * 3 / 2**20, 1), "model": params.model,
                     "batch_size": params.batch_size, "augment": resolve_augment(params.augment, img_size),
                     "loader": params.loader, "precision": str(precision.amp_dtype or torch.float32).removeprefix("torch."),
                     "repeats": repeats, "steps_per_repeat": steps},  # fmt: skip
        "machine": machine_description(precision),
    }


def write_report(results: dict, results_path: Path = RESULTS, report_path: Path = REPORT) -> Path:
    """Write the JSON and replace this device's photo section of BENCHMARKS.md; return the JSON's path."""
    device = results["machine"]["device"]
    path = results_path if device == "cpu" else results_path.with_name("photo-gpu.json")
    write_json(path, results)
    replace_section(report_path, f"bench:photo-{'cpu' if device == 'cpu' else 'gpu'}", format_section(results))
    return path


def format_section(r: dict) -> str:
    m, w = r["machine"], r["workload"]
    table = figure_table(r, ("decode_images_per_s", "decode_one_core_images_per_s", "decode_speedup", "train_images_per_s",
                             "compute_limit_images_per_s", "efficiency", "peak_rss_mb", "peak_rss_anon_mb"))  # fmt: skip
    return (
        f"## Photos on {m['device']} ({m['cpu']}, {m['cores']} cores), {m['date']}\n\n"
        f"torch {m['torch']}, {m['threads']} threads; {w['images']:,} JPEG photos of {w['source_size']}x{w['source_size']} "
        f"decoded to {w['img_size']}px ({w['decoded_mb']} MB decoded), {w['classes']} classes; model `{w['model']}`, "
        f"batch {w['batch_size']}, {w['precision']}, loader `{w['loader']}`; each figure the median of "
        f"{w['repeats']} interleaved repetitions ({w['steps_per_repeat']} training steps each).\n\n"
        f"{table}\n\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path)
    parser.add_argument("--train", type=int, default=20_000)
    parser.add_argument("--test", type=int, default=5_000)
    parser.add_argument("--size", type=int, default=320)
    parser.add_argument("--classes", type=int, default=12)
    args = parser.parse_args()
    write_photo_competition(args.root, n_train=args.train, n_test=args.test, size=args.size, n_classes=args.classes)
    print(f"wrote {args.train} training and {args.test} test images of {args.size}x{args.size} to {args.root}")


if __name__ == "__main__":
    main()
