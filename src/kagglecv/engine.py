"""Training and inference loops. They return numbers; stages own files, logs and trackers.

Batches arrive as uint8 images (B, C, H, W) and integer labels; `to_input` moves them to the
device and normalises them there, so the host never holds a float copy of the data.
"""

from __future__ import annotations

import copy
import math
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np
import torch
from timm.optim import create_optimizer_v2
from timm.scheduler import create_scheduler_v2
from torch import nn
from tqdm import tqdm

Batches = Iterable[tuple[torch.Tensor, torch.Tensor]]  # a DataLoader or anything with len() and iter()


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


@dataclass(frozen=True)
class Precision:
    """Where and in which precision the model runs."""

    device: torch.device
    amp_dtype: torch.dtype | None  # None: float32 throughout

    @property
    def needs_scaler(self) -> bool:
        return self.amp_dtype is torch.float16


def select_precision(amp: str, device: str | None = None) -> Precision:
    """`amp` from params: auto (on with CUDA only), on, off. bfloat16 where supported, else float16."""
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if amp == "off" or (amp == "auto" and dev.type != "cuda"):
        return Precision(dev, None)
    if dev.type == "cuda" and not torch.cuda.is_bf16_supported():
        return Precision(dev, torch.float16)
    return Precision(dev, torch.bfloat16)


def to_input(images: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, device: torch.device) -> torch.Tensor:
    """uint8 (B, C, H, W) -> normalised float32 on `device`; mean and std are (C,) in [0, 1] units."""
    x = images.to(device, non_blocking=True).float().div_(255.0)
    return x.sub_(mean.to(device).view(1, -1, 1, 1)).div_(std.to(device).view(1, -1, 1, 1))


@dataclass(frozen=True)
class FitConfig:
    """What `fit` needs beyond the model and the data; built by the train stage from params."""

    epochs: int
    lr: float
    weight_decay: float
    optimizer: str
    momentum: float
    scheduler: str
    warmup_epochs: int
    label_smoothing: float
    patience: int
    monitor: str  # valid_loss | valid_accuracy


@dataclass
class EpochLog:
    epoch: int
    train_loss: float
    train_accuracy: float
    valid_loss: float
    valid_accuracy: float
    lr: float
    seconds: float
    images_per_s: float
    improved: bool


@dataclass
class FitResult:
    best_epoch: int
    best_state: dict[str, torch.Tensor]
    best_probs: np.ndarray  # (N_valid, num_classes) at the best epoch
    history: list[EpochLog] = field(default_factory=list)


def build_loss(*, label_smoothing: float) -> nn.Module:
    return nn.CrossEntropyLoss(label_smoothing=label_smoothing)


def train_one_epoch(
    model: nn.Module,
    batches: Batches,
    *,
    optimizer: torch.optim.Optimizer,
    loss_fn: nn.Module,
    precision: Precision,
    mean: torch.Tensor,
    std: torch.Tensor,
    scaler: torch.amp.GradScaler | None = None,
    scheduler=None,
    step: int = 0,
) -> tuple[float, float, int]:
    """One pass over `batches`; returns (mean loss, accuracy, images seen)."""
    model.train()
    total_loss = torch.zeros((), device=precision.device)
    correct = torch.zeros((), device=precision.device, dtype=torch.long)
    seen = 0
    for images, labels in tqdm(batches, leave=False, disable=not sys.stderr.isatty(), desc="train"):
        x = to_input(images, mean, std, precision.device)
        y = labels.to(precision.device, non_blocking=True)
        with torch.autocast(precision.device.type, dtype=precision.amp_dtype, enabled=precision.amp_dtype is not None):
            logits = model(x)
            loss = loss_fn(logits, y)
        if not torch.isfinite(loss):
            raise TrainingDiverged(
                f"the loss became {loss.item()} at step {step}: lower lr, or set amp: off if it is on"
            )
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        step += 1
        if scheduler is not None:
            scheduler.step_update(num_updates=step)
        total_loss += loss.detach() * len(y)
        correct += (logits.argmax(1) == y).sum()
        seen += len(y)
    return total_loss.item() / max(seen, 1), correct.item() / max(seen, 1), seen


@torch.no_grad()
def predict_probs(
    model: nn.Module, batches: Batches, *, precision: Precision, mean: torch.Tensor, std: torch.Tensor
) -> np.ndarray:
    """Softmax probabilities (N, num_classes), float32, in the order of `batches`."""
    model.eval()
    out = []
    for images, _ in batches:
        x = to_input(images, mean, std, precision.device)
        with torch.autocast(precision.device.type, dtype=precision.amp_dtype, enabled=precision.amp_dtype is not None):
            logits = model(x)
        out.append(torch.softmax(logits.float(), dim=1).cpu())
    return torch.cat(out).numpy()


def score_probs(probs: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """(cross-entropy, accuracy) of probabilities against integer labels."""
    p = np.clip(probs[np.arange(len(labels)), labels], 1e-15, 1.0)
    return float(-np.log(p).mean()), float((probs.argmax(1) == labels).mean())


def fit(
    model: nn.Module,
    train_batches: Callable[[int], Batches],
    valid_batches: Callable[[], Batches],
    valid_labels: np.ndarray,
    *,
    config: FitConfig,
    precision: Precision,
    mean: torch.Tensor,
    std: torch.Tensor,
    on_epoch: Callable[[EpochLog], None] = lambda log: None,
) -> FitResult:
    """Train with early stopping on the held-out fold; keep the best epoch's weights and probabilities.

    `train_batches(epoch)` gives that epoch's shuffled, augmented batches; `valid_batches()` the
    held-out fold in a fixed order matching `valid_labels`.
    """
    model.to(precision.device)
    optimizer = create_optimizer_v2(
        model, opt=config.optimizer, lr=config.lr, weight_decay=config.weight_decay, momentum=config.momentum
    )
    steps_per_epoch = len(train_batches(0))
    scheduler = None
    if config.scheduler != "none":
        scheduler, _ = create_scheduler_v2(
            optimizer,
            sched=config.scheduler,
            num_epochs=config.epochs,
            warmup_epochs=config.warmup_epochs,
            warmup_lr=config.lr * 0.01,
            min_lr=config.lr * 0.01,
            step_on_epochs=False,
            updates_per_epoch=steps_per_epoch,
        )
    scaler = torch.amp.GradScaler(precision.device.type) if precision.needs_scaler else None
    loss_fn = build_loss(label_smoothing=config.label_smoothing)
    sign = 1.0 if config.monitor == "valid_loss" else -1.0
    best_value, best, bad_epochs, step = math.inf, None, 0, 0
    history: list[EpochLog] = []
    for epoch in range(config.epochs):
        start = time.perf_counter()
        train_loss, train_acc, seen = train_one_epoch(
            model, train_batches(epoch), optimizer=optimizer, loss_fn=loss_fn, precision=precision,
            mean=mean, std=std, scaler=scaler, scheduler=scheduler, step=step,
        )  # fmt: skip
        step += steps_per_epoch
        seconds = time.perf_counter() - start
        probs = predict_probs(model, valid_batches(), precision=precision, mean=mean, std=std)
        valid_loss, valid_acc = score_probs(probs, valid_labels)
        if not math.isfinite(valid_loss):
            raise TrainingDiverged(
                f"the validation loss became {valid_loss} in epoch {epoch + 1}: lower lr, or set amp: off if it is on"
            )
        value = sign * (valid_loss if config.monitor == "valid_loss" else valid_acc)
        improved = value < best_value
        if improved:
            best_value, bad_epochs = value, 0
            best = (epoch, copy.deepcopy({k: v.detach().cpu() for k, v in model.state_dict().items()}), probs)
        else:
            bad_epochs += 1
        log = EpochLog(
            epoch, train_loss, train_acc, valid_loss, valid_acc, optimizer.param_groups[0]["lr"],
            seconds, seen / seconds, improved,
        )  # fmt: skip
        history.append(log)
        on_epoch(log)
        if bad_epochs > config.patience:
            break
    assert best is not None
    return FitResult(best_epoch=best[0], best_state=best[1], best_probs=best[2], history=history)
