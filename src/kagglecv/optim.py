"""Optimiser, learning-rate schedule and weight EMA, built from params with timm and torch.

`LrSchedule` puts timm's schedulers (cosine and step, with warmup) and torch's `OneCycleLR` and
`ReduceLROnPlateau` behind one interface the engine calls after every optimiser step and at the
end of every epoch. Plateau is torch's because timm's does not checkpoint its counters (so a
resumed run would differ); it has no warmup.
"""

from __future__ import annotations

import torch
from timm.optim import create_optimizer_v2
from timm.scheduler import create_scheduler_v2
from timm.utils import ModelEmaV3
from torch import nn

SCHEDULERS = ("cosine", "onecycle", "step", "plateau", "none")
MIN_LR_RATIO = 0.01  # the schedules decay to 1% of the peak lr, and warm up from there


def build_optimizer(
    model: nn.Module, *, name: str, lr: float, weight_decay: float, momentum: float = 0.9, nesterov: bool = False
) -> torch.optim.Optimizer:
    """adamw or sgd through timm's factory (no weight decay on biases and norms)."""
    if name == "sgd":  # timm's 'sgd' is Nesterov SGD; 'momentum' is the plain heavy-ball one
        return create_optimizer_v2(model, opt="nesterov" if nesterov else "momentum", lr=lr,
                                   weight_decay=weight_decay, momentum=momentum)  # fmt: skip
    if name == "adamw":
        return create_optimizer_v2(model, opt="adamw", lr=lr, weight_decay=weight_decay)
    raise ValueError(f"optimizer: unknown optimizer {name!r}; choose one of adamw, sgd")


class LrSchedule:
    """The lr schedule, stepped per optimiser update (`after_step`) and per epoch (`after_epoch`)."""

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        *,
        name: str,
        epochs: int,
        steps_per_epoch: int,
        warmup_epochs: int = 0,
        decay_epochs: int = 10,
        decay_rate: float = 0.1,
        plateau_mode: str = "min",
    ) -> None:
        if name not in SCHEDULERS:
            raise ValueError(f"scheduler: unknown schedule {name!r}; choose one of {', '.join(SCHEDULERS)}")
        self.name = name
        self.impl = None
        lr = optimizer.param_groups[0]["lr"]
        if name == "onecycle":
            self.impl = torch.optim.lr_scheduler.OneCycleLR(
                optimizer, max_lr=lr, total_steps=max(epochs * steps_per_epoch, 1),
                pct_start=min(max(warmup_epochs / epochs, 0.05), 0.5), final_div_factor=1 / MIN_LR_RATIO,
            )  # fmt: skip
        elif name == "plateau":
            self.impl = torch.optim.lr_scheduler.ReduceLROnPlateau(
                optimizer, mode=plateau_mode, factor=decay_rate, patience=decay_epochs, min_lr=lr * MIN_LR_RATIO
            )
        elif name != "none":
            self.impl, _ = create_scheduler_v2(
                optimizer, sched=name, num_epochs=epochs, warmup_epochs=warmup_epochs,
                warmup_lr=lr * MIN_LR_RATIO, min_lr=lr * MIN_LR_RATIO,
                decay_epochs=decay_epochs, decay_rate=decay_rate,
                step_on_epochs=False, updates_per_epoch=steps_per_epoch,
            )  # fmt: skip

    def after_step(self, step: int) -> None:
        """`step`: optimiser updates done so far in this fold."""
        if self.name == "onecycle":
            self.impl.step()
        elif self.impl is not None and self.name != "plateau":
            self.impl.step_update(num_updates=step)

    def after_epoch(self, epoch: int, metric: float) -> None:
        """`epoch`: epochs done so far; `metric`: the monitored validation value (plateau only)."""
        if self.name == "plateau":
            self.impl.step(metric)

    def state_dict(self) -> dict:
        return self.impl.state_dict() if self.impl is not None else {}

    def load_state_dict(self, state: dict) -> None:
        if self.impl is not None:
            self.impl.load_state_dict(state)


def build_ema(model: nn.Module, *, decay: float) -> ModelEmaV3:
    """timm's weight EMA; its warmup ramps the decay up so short runs are not stuck near the init."""
    return ModelEmaV3(model, decay=decay, use_warmup=True)
