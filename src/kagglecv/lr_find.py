"""`python -m kagglecv.lr_find`: the learning-rate range test on fold 0, with the current params.

The test of Smith (2015, "Cyclical Learning Rates for Training Neural Networks", section 3.3), as
fastai's `lr_find` runs it: fold 0's model trains from its initialisation for at most `--steps`
optimiser steps while the lr grows exponentially from `--start-lr` to `--end-lr`; the loss is
smoothed (an exponential moving average, bias-corrected) and the sweep stops once it diverges
(above 4x its lowest value, or not finite). fastai averages over about 50 steps (beta 0.98), which
on a 100-step sweep lags the curve by decades of lr; here the average spans 5% of the sweep. The
suggested lr is the one at the lowest smoothed loss divided by 10 (fastai's `minimum`): still on
the steep, falling part of the curve, a safe margin below where training blows up.

Reads `params.yaml` (model, pretrained weights, optimiser, weight decay, loss, mixup, clipping,
augmentation, batch size, precision: what the train stage's fold 0 uses; not `lr`, the schedule,
EMA, accumulation or the class-balanced sampler), `data/raw/` and `data/folds.csv`. Writes
`plots/lr_find.png` and prints the `dvc exp run -S lr=...` to run. Not a DVC stage: it changes nothing
the pipeline reads.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import logging
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from kagglecv.artifacts import atomic_path
from kagglecv.data import CompetitionError
from kagglecv.engine import Trainer, build_trainer, fit_config, to_input
from kagglecv.fold_training import make_setup, read_training_set
from kagglecv.loaders import train_batches
from kagglecv.losses import inverse_frequency
from kagglecv.models import ModelError, build_model
from kagglecv.params import Params, ParamsError, load_params
from kagglecv.paths import Paths
from kagglecv.runtime import main_of, seed_everything
from kagglecv.transforms import TransformError, resolve_augment

log = logging.getLogger("kagglecv.lr_find")

SMOOTHED_SHARE = 0.05  # the running average spans about this share of the sweep's steps
DIVERGED = 4.0  # stop once the smoothed loss exceeds this many times its lowest value
MAX_STEPS = 1000


class LrFindError(ValueError):
    """The sweep found nothing to suggest; the message says which option to change."""


@dataclass(frozen=True)
class LrFind:
    lrs: list[float]  # one per step taken
    losses: list[float]  # each step's training loss
    smoothed: list[float]  # bias-corrected running average of `losses`
    diverged: bool  # the sweep stopped before its last step
    suggested: float  # lr at the lowest smoothed loss / 10
    steepest: float  # lr where the smoothed loss falls fastest (per decade of lr), before its lowest point


def format_lr(lr: float) -> str:
    """Two significant digits, with a dot so YAML reads a float: 0.0032 -> '3.2e-3'."""
    mantissa, exponent = f"{lr:.1e}".split("e")
    return f"{mantissa}e{int(exponent)}" if int(exponent) < 0 else f"{mantissa}e+{int(exponent)}"


def lr_steps(start_lr: float, end_lr: float, steps: int) -> np.ndarray:
    """`steps` learning rates growing exponentially from `start_lr` to `end_lr`."""
    return start_lr * (end_lr / start_lr) ** (np.arange(steps) / max(steps - 1, 1))


def train_step(
    trainer: Trainer, images: torch.Tensor, labels: torch.Tensor, mean: torch.Tensor, std: torch.Tensor
) -> float:
    """One optimiser step on one batch, as `engine.train_one_epoch` takes it; the batch's loss."""
    precision = trainer.precision
    x = to_input(images, mean, std, precision)
    y = labels.to(precision.device)
    target = y
    if trainer.mixup is not None:
        x, target = trainer.mixup(x, y)
    with torch.autocast(precision.device.type, dtype=precision.amp_dtype, enabled=precision.amp_dtype is not None):
        loss = trainer.loss_fn(trainer.model(x), target)
    if not torch.isfinite(loss):
        trainer.optimizer.zero_grad(set_to_none=True)
        return float(loss.item())
    (trainer.scaler.scale(loss) if trainer.scaler is not None else loss).backward()
    trainer.optimizer_step()
    return float(loss.item())


def sweep(trainer: Trainer, batches: Iterator, lrs: np.ndarray, *, mean: torch.Tensor, std: torch.Tensor) -> LrFind:
    """Train one batch of `batches` per lr of `lrs` until the loss diverges; the curve and the suggestions."""
    losses: list[float] = []
    smoothed: list[float] = []
    average, lowest = 0.0, math.inf
    beta = max(0.0, 1.0 - 1.0 / (SMOOTHED_SHARE * len(lrs)))  # 0.8 for 100 steps: about 5 steps averaged
    for step, lr in enumerate(lrs):
        for group in trainer.optimizer.param_groups:
            group["lr"] = float(lr)
        loss = train_step(trainer, *next(batches), mean, std)
        if not math.isfinite(loss):
            break
        average = beta * average + (1 - beta) * loss
        smoothed.append(average / (1 - beta ** (step + 1)))
        losses.append(loss)
        lowest = min(lowest, smoothed[-1])
        if smoothed[-1] > DIVERGED * lowest:
            break
    taken = [float(lr) for lr in lrs[: len(losses)]]
    if len(taken) < 3:
        raise LrFindError(f"the loss diverged within {len(taken)} step(s) of lr {format_lr(lrs[0])}: lower --start-lr")
    best = int(np.argmin(smoothed))
    # Loss per decade of lr up to the lowest point; the last slope is one-sided, so it is left out.
    slope = np.gradient(np.asarray(smoothed[: best + 1]), np.log10(taken[: best + 1]))[:-1] if best > 1 else [0.0]
    return LrFind(taken, losses, smoothed, len(taken) < len(lrs), taken[best] / 10, taken[int(np.argmin(slope))])


def cycle_batches(batches: Callable[[int], object]) -> Iterator:
    """The batches of epoch 0, 1, 2, ... one after another, for as many steps as asked."""
    for epoch in itertools.count():
        yield from batches(epoch)


def run(params: Params, paths: Paths = Paths(), *, steps: int = 100, start_lr: float = 1e-7, end_lr: float = 10.0) -> LrFind:
    """The range test on fold 0's training images; draws the curve at `paths.lr_find_plot`."""
    params, competition, data = read_training_set(params, paths)
    classes, images, labels = data.task.classes, data.images, data.labels
    train = np.flatnonzero(data.fold_of != 0)  # fold 0's training part (a holdout split's train-only rows too)
    setup = make_setup(params, images, len(classes))
    seed_everything(params.seed)  # fold 0's initialisation, as the train stage draws it
    model = build_model(name=params.model, num_classes=len(classes), in_chans=images.shape[-1],
                        img_size=params.img_size, pretrained=params.pretrained)  # fmt: skip
    config = dataclasses.replace(fit_config(params), lr=start_lr, scheduler="none", warmup_epochs=0, accumulate=1,
                                 ema=False, compile=False)  # fmt: skip
    balanced = params.class_balance == "weights"
    weights = torch.from_numpy(inverse_frequency(labels[train], len(classes))) if balanced else None
    batches = train_batches(images, labels[train], resolve_augment(params.augment, params.img_size), rows=train,
                            batch_size=params.batch_size, seed=params.seed, fold=0, size=params.img_size,
                            num_workers=params.num_workers, loader=params.loader, device=setup.precision.device)  # fmt: skip
    trainer = build_trainer(model, config=config, precision=setup.precision, steps_per_epoch=len(batches(0)),
                            num_classes=len(classes), class_weights=weights, multilabel=data.task.multilabel)  # fmt: skip
    result = sweep(trainer, cycle_batches(batches), lr_steps(start_lr, end_lr, steps),
                   mean=torch.tensor(setup.mean), std=torch.tensor(setup.std))  # fmt: skip
    write_plot(paths.lr_find_plot, result)
    return result


def write_plot(path: Path, result: LrFind, *, width: int = 640, height: int = 400, margin: int = 48) -> None:
    """Smoothed loss (dark) and raw loss (light) against the lr on a log axis; the suggested lr in red."""
    image = Image.new("RGB", (width, height), "white")
    draw, font = ImageDraw.Draw(image), ImageFont.load_default()
    x_lo, x_hi = math.log10(result.lrs[0]), math.log10(result.lrs[-1])
    y_lo = min(result.smoothed)
    y_hi = max(min(max(result.losses), 2 * result.smoothed[0]), y_lo + 1e-6)  # a divergent spike would flatten the rest

    def xy(lr: float, loss: float) -> tuple[float, float]:
        fx = (math.log10(lr) - x_lo) / max(x_hi - x_lo, 1e-9)
        fy = (min(loss, y_hi) - y_lo) / (y_hi - y_lo)
        return margin + fx * (width - 2 * margin), height - margin - fy * (height - 2 * margin)

    draw.rectangle((margin, margin, width - margin, height - margin), outline="grey")
    for decade in range(math.ceil(x_lo), math.floor(x_hi) + 1):
        x, _ = xy(10.0**decade, y_lo)
        draw.line((x, height - margin, x, height - margin + 4), fill="grey")
        draw.text((x - 12, height - margin + 6), f"1e{decade}", fill="black", font=font)
    draw.text((4, margin - 12), f"loss {y_hi:.3g}", fill="black", font=font)
    draw.text((4, height - margin - 4), f"{y_lo:.3g}", fill="black", font=font)
    draw.line([xy(lr, loss) for lr, loss in zip(result.lrs, result.losses)], fill=(170, 190, 230), width=1)
    draw.line([xy(lr, loss) for lr, loss in zip(result.lrs, result.smoothed)], fill=(20, 60, 160), width=2)
    x, _ = xy(result.suggested, y_lo)
    draw.line((x, margin, x, height - margin), fill="red", width=1)
    draw.text((x + 4, margin + 4), f"suggested lr {format_lr(result.suggested)}", fill="red", font=font)
    draw.text((margin, height - 16), "learning rate (log scale)", fill="black", font=font)
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG")


def report(result: LrFind, plot_path: Path) -> str:
    """What the sweep found, ending with the command that runs the experiment with the suggested lr."""
    stop = f"the loss diverged at lr {format_lr(result.lrs[-1])}" if result.diverged else "the loss never diverged"
    lowest = result.smoothed.index(min(result.smoothed))
    return "\n".join([
        f"lr_find: {len(result.lrs)} steps on fold 0 from lr {format_lr(result.lrs[0])}; {stop}",
        f"lowest smoothed loss {result.smoothed[lowest]:.4g} at lr {format_lr(result.lrs[lowest])}; "
        f"steepest fall at lr {format_lr(result.steepest)}; curve: {plot_path}",
        f"suggested lr (lowest-loss lr / 10): {format_lr(result.suggested)}",
        f"dvc exp run -S lr={format_lr(result.suggested)}",
    ])  # fmt: skip


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m kagglecv.lr_find", description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100, help="optimiser steps at most (default 100)")
    parser.add_argument("--start-lr", type=float, default=1e-7, help="first lr (default 1e-7)")
    parser.add_argument("--end-lr", type=float, default=10.0, help="last lr unless the loss diverges (default 10)")
    args = parser.parse_args()
    if not 3 <= args.steps <= MAX_STEPS or not 0 < args.start_lr < args.end_lr:
        parser.error(f"need 3 <= --steps <= {MAX_STEPS} and 0 < --start-lr < --end-lr")
    return args


def _main() -> None:
    args = _arguments()
    result = run(load_params(), steps=args.steps, start_lr=args.start_lr, end_lr=args.end_lr)
    print(report(result, Paths().lr_find_plot))


main = main_of(_main, ParamsError, CompetitionError, ModelError, TransformError, LrFindError)

if __name__ == "__main__":
    main()
