"""Training and inference loops. They return numbers; stages own files, logs and trackers.

Batches arrive as uint8 images (B, C, H, W) and integer labels, or soft targets (B, K); `to_input` moves
them to the device and normalises them there, so the host never holds a float copy of the data. `fit` can
resume: every epoch it offers the stage a snapshot of everything that changes during training
(weights, optimiser, schedule, scaler, EMA, early stopping, random generators), and continuing
from one reproduces the uninterrupted run exactly on the CPU.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np
import torch

from kagglecv.losses import build_loss, build_mixup
from kagglecv.optim import LrSchedule, build_ema, build_optimizer
from kagglecv.params import Params, ParamsError
from kagglecv.resume import read_rng_state, write_rng_state
from kagglecv.stopping import EarlyStopping, average_states
from kagglecv.tta import IDENTITY, apply_view

Batches = Iterable[tuple[torch.Tensor, torch.Tensor]]  # a DataLoader or anything with len() and iter()


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


@dataclass(frozen=True)
class Precision:
    """Where, in which precision and memory format the model runs."""

    device: torch.device
    amp_dtype: torch.dtype | None  # None: float32 throughout
    channels_last: bool = False

    @property
    def needs_scaler(self) -> bool:
        return self.amp_dtype is torch.float16


def select_precision(amp: str, device: str | None = None, *, channels_last: bool = False) -> Precision:
    """`amp` from params: auto (on with CUDA only), on, off, or a forced bf16 / fp16.

    `on` picks bfloat16 where the device supports it and float16 (with a GradScaler) otherwise.
    """
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if amp == "off" or (amp == "auto" and dev.type != "cuda"):
        return Precision(dev, None, channels_last)
    bf16_ok = dev.type != "cuda" or torch.cuda.is_bf16_supported()
    if amp == "bf16" and not bf16_ok:
        raise ParamsError(f"amp: bf16, but {torch.cuda.get_device_name(dev)} has no bfloat16; use amp: fp16 or amp: on")
    if amp == "fp16" or not bf16_ok:
        return Precision(dev, torch.float16, channels_last)  # float16 trains with a GradScaler
    return Precision(dev, torch.bfloat16, channels_last)


def to_input(images: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, precision: Precision) -> torch.Tensor:
    """uint8 (B, C, H, W) -> normalised float32 on the device; mean and std are (C,) in [0, 1] units."""
    device = precision.device
    x = images.to(device, non_blocking=True).float().div_(255.0)
    x = x.sub_(mean.to(device).view(1, -1, 1, 1)).div_(std.to(device).view(1, -1, 1, 1))
    if not precision.channels_last:
        return x
    # NHWC strides whatever the batch's: with one channel both layouts count as contiguous, so
    # .contiguous(memory_format=torch.channels_last) would keep NCHW strides, and the convolutions
    # follow the strides (a grey batch out of grid_sample trained 25 % slower).
    b, c, h, w = x.shape
    return torch.empty_strided((b, c, h, w), (h * w * c, 1, w * c, c), dtype=x.dtype, device=x.device).copy_(x)


@dataclass(frozen=True)
class FitConfig:
    """What `fit` needs beyond the model and the data: the training knobs of `Params`, flattened
    (`fit_config`); no defaults of its own, so params.yaml is the only place they are set."""

    epochs: int
    lr: float
    weight_decay: float
    optimizer: str
    momentum: float
    nesterov: bool
    scheduler: str
    warmup_epochs: int
    decay_epochs: int
    decay_rate: float
    loss: str
    label_smoothing: float
    focal_gamma: float
    mixup_alpha: float
    cutmix_alpha: float
    mixup_prob: float
    mixup_switch_prob: float
    clip_grad: float  # max gradient norm; 0: off
    accumulate: int  # batches per optimiser step
    ema: bool
    ema_decay: float
    patience: int
    monitor: str  # valid_loss | valid_accuracy | metric; auto, unresolved for a task (fold_training.resolve_monitor): the loss
    soup: int  # best epochs whose weights are averaged into the model; 1: the best epoch's
    compile: bool


def fit_config(params: Params) -> FitConfig:
    """The training knobs of `params`; the `mixup` and `ema` sections flattened into their own fields."""
    names = {f.name for f in dataclasses.fields(FitConfig)}
    flat = {k: v for k, v in dataclasses.asdict(params).items() if k in names and k != "ema"}
    return FitConfig(
        **flat, ema=params.ema.enabled, ema_decay=params.ema.decay, mixup_alpha=params.mixup.mixup_alpha,
        cutmix_alpha=params.mixup.cutmix_alpha, mixup_prob=params.mixup.prob, mixup_switch_prob=params.mixup.switch_prob,
    )  # fmt: skip


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
    valid_metric: float = math.nan  # the competition's metric, when `monitor` is metric


@dataclass
class FitResult:
    best_epoch: int
    best_state: dict[str, torch.Tensor]  # the EMA weights when EMA is on
    best_probs: np.ndarray  # (N_valid, num_classes) at the best epoch
    history: list[EpochLog] = field(default_factory=list)
    model: torch.nn.Module | None = None  # the evaluated model (EMA when on), holding the best weights


@dataclass
class Trainer:
    """The model and everything that updates it; `fit` builds one per fold."""

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    schedule: LrSchedule
    loss_fn: torch.nn.Module
    precision: Precision
    scaler: torch.amp.GradScaler | None = None
    ema: torch.nn.Module | None = None  # timm's ModelEmaV3
    mixup: Callable | None = None  # timm's Mixup: (x, y) -> (x, soft targets (B, K))
    multilabel: bool = False  # sigmoid per label, 0/1 targets (B, K); else softmax over classes
    clip_grad: float = 0.0
    accumulate: int = 1
    step: int = 0  # optimiser updates so far
    all_reduce: Callable[[torch.Tensor], torch.Tensor] = lambda t: t  # sums over processes when distributed

    @property
    def plain_model(self) -> torch.nn.Module:
        """The model without its DistributedDataParallel wrapper, whose state_dict keys match a checkpoint."""
        is_ddp = isinstance(self.model, torch.nn.parallel.DistributedDataParallel)
        return self.model.module if is_ddp else self.model

    @property
    def eval_model(self) -> torch.nn.Module:
        return self.ema.module if self.ema is not None else self.plain_model

    def optimizer_step(self) -> None:
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)  # clip the true gradients, not the scaled ones
        if self.clip_grad > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.clip_grad)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        self.schedule.after_step(self.step)
        if self.ema is not None:
            self.ema.update(self.plain_model, step=self.step)


def snapshot(trainer: Trainer, stopper: EarlyStopping, history: list[dict], epochs_done: int) -> dict:
    """Everything needed to continue `engine.fit` after `epochs_done` epochs, as plain tensors and numbers."""
    cpu = lambda sd: {k: v.detach().cpu().clone() for k, v in sd.items()}  # noqa: E731
    return {
        "epochs_done": epochs_done, "step": trainer.step, "model": cpu(trainer.plain_model.state_dict()),
        "optimizer": trainer.optimizer.state_dict(), "schedule": trainer.schedule.state_dict(),
        "scaler": trainer.scaler.state_dict() if trainer.scaler is not None else None,
        "ema": cpu(trainer.ema.module.state_dict()) if trainer.ema is not None else None,
        "stopper": stopper.state_dict(), "history": history,
        "rng": read_rng_state(),
    }  # fmt: skip


def restore(trainer: Trainer, stopper: EarlyStopping, state: dict) -> tuple[list[dict], int]:
    """Load a `snapshot` into `trainer` and `stopper`; return (history, epochs done)."""
    trainer.plain_model.load_state_dict(state["model"])
    trainer.optimizer.load_state_dict(state["optimizer"])
    trainer.schedule.load_state_dict(state["schedule"])
    if trainer.scaler is not None and state["scaler"] is not None:
        trainer.scaler.load_state_dict(state["scaler"])
    if trainer.ema is not None and state["ema"] is not None:
        trainer.ema.module.load_state_dict(state["ema"])
    trainer.step = state["step"]
    stopper.load_state_dict(state["stopper"])
    write_rng_state(state["rng"])
    return state["history"], state["epochs_done"]


def train_one_epoch(trainer: Trainer, batches: Batches, *, mean: torch.Tensor, std: torch.Tensor) -> tuple[float, float, int]:
    """One pass over `batches`; returns (mean loss, accuracy, images seen), summed over processes."""
    model, precision = trainer.model, trainer.precision
    model.train()
    device = precision.device
    stats = torch.zeros(3, device=device, dtype=torch.float64)  # loss sum, correct, seen
    n_batches = len(batches)
    for i, (images, labels) in enumerate(batches):
        x = to_input(images, mean, std, precision)
        y = labels.to(device, non_blocking=True)
        target = y
        if trainer.mixup is not None:
            x, target = trainer.mixup(x, y)  # target: soft (B, K)
        with torch.autocast(device.type, dtype=precision.amp_dtype, enabled=precision.amp_dtype is not None):
            logits = model(x)
            loss = trainer.loss_fn(logits, target)
        if not torch.isfinite(loss):
            raise TrainingDiverged(
                f"the loss became {loss.item()} at step {trainer.step}: lower lr, set clip_grad, or amp: off if it is on"
            )
        scaled = loss / trainer.accumulate
        (trainer.scaler.scale(scaled) if trainer.scaler is not None else scaled).backward()
        if (i + 1) % trainer.accumulate == 0 or i + 1 == n_batches:
            trainer.optimizer_step()
        if trainer.multilabel:
            correct = ((logits > 0) == (y > 0.5)).double().mean(1).sum()
        else:
            correct = (logits.argmax(1) == (y.argmax(1) if y.ndim == 2 else y)).sum()  # soft targets (B, K): their top class
        stats += torch.stack([loss.detach().double() * len(y), correct.double(),
                              torch.tensor(len(y), device=device, dtype=torch.float64)])  # fmt: skip
    loss_sum, correct, seen = trainer.all_reduce(stats).tolist()
    return loss_sum / max(seen, 1), correct / max(seen, 1), int(seen)


@torch.no_grad()
def predict_views(
    model: torch.nn.Module, batches: Batches, *, precision: Precision, mean: torch.Tensor, std: torch.Tensor,
    views: list[str] = (IDENTITY,), multilabel: bool = False,
) -> np.ndarray:  # fmt: skip
    """Probabilities (V, N, num_classes), float32, per view of `views`, in the order of `batches`: softmax over
    the classes, or with `multilabel` a sigmoid per label."""
    model.eval()
    out: np.ndarray | None = None  # (V, capacity, K), allocated once: no small long-lived buffers between batches
    n = 0
    for images, _ in batches:
        x = to_input(images, mean, std, precision)
        for v, view in enumerate(views):
            with torch.autocast(precision.device.type, dtype=precision.amp_dtype, enabled=precision.amp_dtype is not None):
                logits = model(apply_view(x, view))
            if out is None:  # every batch is at most this large, and there are len(batches) of them
                out = np.empty((len(views), len(batches) * len(x), logits.shape[1]), np.float32)
            probs = torch.sigmoid(logits.float()) if multilabel else torch.softmax(logits.float(), dim=1)
            out[v, n : n + len(x)] = probs.cpu().numpy()
        n += len(x)
    return out[:, :n].copy() if out is not None else np.zeros((len(views), 0, 0), np.float32)


def predict_probs(
    model: torch.nn.Module, batches: Batches, *, precision: Precision, mean: torch.Tensor, std: torch.Tensor,
    views: list[str] = (IDENTITY,), multilabel: bool = False,
) -> np.ndarray:  # fmt: skip
    """Probabilities (N, num_classes) averaged over `views` (see `predict_views`)."""
    return predict_views(model, batches, precision=precision, mean=mean, std=std, views=views, multilabel=multilabel).mean(0)


def score_probs(probs: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """(cross-entropy, accuracy) of probabilities against integer labels; against 0/1 labels (N, K) the
    mean binary cross-entropy and the share of labels right at 0.5."""
    if labels.ndim == 2:
        q = np.clip(probs.astype(np.float64), 1e-15, 1 - 1e-15)  # float32 rounds 1 - 1e-15 to 1: log(0)
        bce = -(labels * np.log(q) + (1 - labels) * np.log(1 - q)).mean()
        return float(bce), float(((probs >= 0.5) == (labels > 0.5)).mean())
    p = np.clip(probs[np.arange(len(labels)), labels], 1e-15, 1.0)
    return float(-np.log(p).mean()), float((probs.argmax(1) == labels).mean())


def build_trainer(
    model: torch.nn.Module, *, config: FitConfig, precision: Precision, steps_per_epoch: int, num_classes: int,
    class_weights: torch.Tensor | None = None, multilabel: bool = False,
) -> Trainer:  # fmt: skip
    """Optimiser, schedule, loss, scaler, EMA and mixup for `model`, moved to the device."""
    model.to(precision.device, memory_format=torch.channels_last if precision.channels_last else torch.preserve_format)
    optimizer = build_optimizer(model, name=config.optimizer, lr=config.lr, weight_decay=config.weight_decay,
                                momentum=config.momentum, nesterov=config.nesterov)  # fmt: skip
    updates = math.ceil(steps_per_epoch / config.accumulate)
    schedule = LrSchedule(
        optimizer, name=config.scheduler, epochs=config.epochs, steps_per_epoch=updates,
        warmup_epochs=config.warmup_epochs, decay_epochs=config.decay_epochs, decay_rate=config.decay_rate,
        plateau_mode="min" if config.monitor in ("valid_loss", "auto") else "max",  # accuracy, metric: higher is better
    )  # fmt: skip
    mixup = build_mixup(mixup_alpha=config.mixup_alpha, cutmix_alpha=config.cutmix_alpha, prob=config.mixup_prob,
                        switch_prob=config.mixup_switch_prob, label_smoothing=config.label_smoothing,
                        num_classes=num_classes)  # fmt: skip
    loss_fn = build_loss(
        name=config.loss, label_smoothing=0.0 if mixup else config.label_smoothing,  # mixup smooths its targets
        focal_gamma=config.focal_gamma, multilabel=multilabel,
        class_weights=None if class_weights is None else class_weights.float().to(precision.device),
    )  # fmt: skip
    ema = build_ema(model, decay=config.ema_decay) if config.ema else None
    if config.compile:
        model.compile()  # in place, so state_dict keys stay those of the plain model
    scaler = torch.amp.GradScaler(precision.device.type) if precision.needs_scaler else None
    return Trainer(model, optimizer, schedule, loss_fn.to(precision.device), precision, scaler, ema, mixup,
                   multilabel, config.clip_grad, config.accumulate)  # fmt: skip


def fit(
    trainer: Trainer,
    train_batches: Callable[[int], Batches],
    valid_batches: Callable[[], Batches],
    valid_labels: np.ndarray,
    *,
    config: FitConfig,
    mean: torch.Tensor,
    std: torch.Tensor,
    resume: dict | None = None,
    on_epoch: Callable[[EpochLog, Callable[[], dict]], None] = lambda log, state: None,
    score: Callable[[np.ndarray], float] | None = None,
) -> FitResult:
    """Train with early stopping on the held-out fold; keep the best epoch's weights and probabilities.

    `train_batches(epoch)` gives that epoch's shuffled, augmented batches; `valid_batches()` the
    held-out fold in a fixed order matching `valid_labels`. `resume` is a `snapshot` to continue
    from; `on_epoch(log, state)` is called after every epoch, `state()` giving that snapshot. With
    `monitor: metric`, `score(probs)` is the competition's metric of the held-out probabilities, higher better.
    """
    if config.monitor == "metric" and score is None:
        raise ValueError("monitor: metric needs a score function")
    stopper = EarlyStopping(patience=config.patience, mode="min" if config.monitor in ("valid_loss", "auto") else "max",
                            keep=config.soup)  # fmt: skip
    history, start = [], 0
    if resume:
        entries, start = restore(trainer, stopper, resume)
        history = [EpochLog(**entry) for entry in entries]
    precision = trainer.precision
    for epoch in range(start, config.epochs):
        if stopper.should_stop:
            break
        begin = time.perf_counter()
        train_loss, train_acc, seen = train_one_epoch(trainer, train_batches(epoch), mean=mean, std=std)
        seconds = time.perf_counter() - begin
        probs = predict_probs(trainer.eval_model, valid_batches(), precision=precision, mean=mean, std=std,
                              multilabel=trainer.multilabel)  # fmt: skip
        valid_loss, valid_acc = score_probs(probs, valid_labels)
        valid_metric = score(probs) if config.monitor == "metric" else math.nan
        if not math.isfinite(valid_loss):
            raise TrainingDiverged(
                f"the validation loss became {valid_loss} in epoch {epoch + 1}: lower lr, or set amp: off if it is on"
            )
        value = {"valid_loss": valid_loss, "auto": valid_loss, "valid_accuracy": valid_acc, "metric": valid_metric}[config.monitor]
        improved = stopper.update(value, epoch, trainer.eval_model.state_dict(), probs)
        trainer.schedule.after_epoch(epoch + 1, value)
        log = EpochLog(
            epoch, train_loss, train_acc, valid_loss, valid_acc, trainer.optimizer.param_groups[0]["lr"],
            seconds, seen / seconds, improved, valid_metric,
        )  # fmt: skip
        history.append(log)
        on_epoch(log, lambda: snapshot(trainer, stopper, [dataclasses.asdict(h) for h in history], epoch + 1))
    if len(stopper.kept) > 1:  # a soup of the best epochs: its own weights, and its own held-out probabilities
        soup = average_states([state for _, _, state in stopper.kept])
        trainer.eval_model.load_state_dict(soup)
        probs = predict_probs(trainer.eval_model, valid_batches(), precision=precision, mean=mean, std=std)
        return FitResult(stopper.best_epoch, soup, probs, history, trainer.eval_model)
    trainer.eval_model.load_state_dict(stopper.best_state)
    return FitResult(stopper.best_epoch, stopper.best_state, stopper.best_probs, history, trainer.eval_model)
