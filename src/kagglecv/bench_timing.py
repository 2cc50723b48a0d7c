"""What the benchmarks share: a trainer as the train stage builds it, the two timed loops, memory.

`time_stage_path` times the train stage's own code (`loaders.train_batches` feeding
`engine.train_one_epoch`); `time_compute_limit` times the very same `train_one_epoch` on batches
already on the device (distinct images and labels, gathered before the clock starts): the same
forward, backward, loss, optimiser and schedule steps with no data path, so the ratio of the two
is the share of the hardware's time the data path leaves to the model.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import re
import time
from collections.abc import Callable, Sequence
from itertools import islice
from pathlib import Path

import numpy as np
import torch

from kagglecv.batch_transforms import resize_batch
from kagglecv.engine import Precision, Trainer, build_trainer, fit_config, train_one_epoch
from kagglecv.loaders import gather, train_batches
from kagglecv.models import build_model
from kagglecv.params import Params
from kagglecv.transforms import resolve_augment


REPORT = Path("BENCHMARKS.md")


def interleave(measure: dict[str, Callable[[int], float]], repeats: int) -> dict[str, list[float]]:
    """Each measurement once to warm up (allocations, kernel selection), then `repeats` rounds of all of
    them, the order rotated each round, so load on a shared machine falls on every one alike."""
    for name in measure:
        measure[name](-1)
    runs: dict[str, list[float]] = {name: [] for name in measure}
    order = list(measure)
    for r in range(repeats):
        for name in order[r % len(order) :] + order[: r % len(order)]:
            runs[name].append(measure[name](r))
    return runs


def fresh_trainer(params: Params, precision: Precision, *, steps_per_epoch: int, num_classes: int, in_chans: int) -> Trainer:
    """A model with the optimiser, schedule and loss the train stage would give it."""
    model = build_model(name=params.model, num_classes=num_classes, in_chans=in_chans, img_size=params.img_size)
    return build_trainer(model, config=fit_config(params), precision=precision, steps_per_epoch=steps_per_epoch,
                         num_classes=num_classes)  # fmt: skip


class First:
    """The first `steps` batches of an epoch (a steady-state slice of it)."""

    def __init__(self, batches, steps: int) -> None:
        self.batches, self.steps = batches, min(steps, len(batches))

    def __len__(self) -> int:
        return self.steps

    def __iter__(self):
        return islice(iter(self.batches), self.steps)


def sync(precision: Precision) -> None:
    if precision.device.type == "cuda":
        torch.cuda.synchronize()


def time_stage_path(
    params: Params, precision: Precision, images: np.ndarray, labels: np.ndarray, *, steps: int, epoch: int,
    trainer: Trainer, mean: torch.Tensor, std: torch.Tensor,
) -> float:  # fmt: skip
    """Images/s of the train stage's data path and engine loop over `steps` batches of one epoch."""
    spec = resolve_augment(params.augment, params.img_size)
    make = train_batches(images, labels, spec, batch_size=params.batch_size, seed=params.seed, fold=0,
                         size=params.img_size, loader=params.loader, device=precision.device)  # fmt: skip
    batches = First(make(epoch), steps)
    sync(precision)
    start = time.perf_counter()
    _, _, seen = train_one_epoch(trainer, batches, mean=mean, std=std)
    sync(precision)
    return seen / (time.perf_counter() - start)


def time_compute_limit(
    params: Params, precision: Precision, images: np.ndarray, labels: np.ndarray, *, steps: int, trainer: Trainer,
    mean: torch.Tensor, std: torch.Tensor,
) -> float:  # fmt: skip
    """Images/s of `train_one_epoch` on `steps` distinct batches already on the device at img_size."""
    b = params.batch_size
    rows = np.arange(steps * b) % len(images)
    batches = []
    for i in range(steps):
        x = resize_batch(gather(images, rows[i * b : (i + 1) * b], precision.device), params.img_size)
        batches.append((x, torch.from_numpy(labels[rows[i * b : (i + 1) * b]]).to(precision.device)))
    sync(precision)
    start = time.perf_counter()
    _, _, seen = train_one_epoch(trainer, batches, mean=mean, std=std)
    sync(precision)
    return seen / (time.perf_counter() - start)


def machine_description(precision: Precision) -> dict:
    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        names = re.findall(r"model name\s*:\s*(.+)", cpuinfo.read_text())
        cpu = names[0].strip() if names else cpu
    device = torch.cuda.get_device_name(precision.device) if precision.device.type == "cuda" else "cpu"
    return {"device": device, "cpu": cpu, "cores": os.cpu_count(), "torch": torch.__version__,
            "threads": torch.get_num_threads(), "python": platform.python_version(),
            "date": datetime.date.today().isoformat()}  # fmt: skip


def figure_table(results: dict, keys: tuple[str, ...]) -> str:
    """The report's table of `results[key]` for each key, in that order."""
    return "| figure | value |\n| --- | --- |\n" + "\n".join(f"| `{k}` | {results[k]} |" for k in keys)


def merge_rows(path: Path, name: str, key: str, rows: list[dict], order: Sequence[str]) -> list[dict]:
    """`rows` with those of `path`'s list `name` whose `key` they do not hold (a run of some cases replaces their
    rows and keeps the others', each row with its date), ordered by `order`."""
    kept = json.loads(path.read_text())[name] if path.exists() else []
    ran = {r[key] for r in rows}
    return sorted([r for r in kept if r[key] not in ran] + rows, key=lambda r: order.index(r[key]))


def replace_section(report_path: Path, name: str, body: str) -> None:
    """Put `body` between the two `<!-- name -->` markers of the report, or append it with them."""
    marker = f"<!-- {name} -->"
    section = f"{marker}\n{body}{marker}\n"
    text = report_path.read_text() if report_path.exists() else "# Benchmarks\n\n"
    if marker in text:
        head, _, rest = text.partition(marker)
        _, _, tail = rest.partition(marker + "\n")
        text = head + section + tail
    else:
        text = text.rstrip("\n") + "\n\n" + section
    report_path.write_text(text)
