"""Early stopping on a validation metric, keeping the best epoch's weights and probabilities (and, for a
checkpoint soup, the best few epochs' weights)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch


@dataclass
class EarlyStopping:
    """Stop after more than `patience` epochs without improvement of the monitored value."""

    patience: int
    mode: str = "min"  # min: lower is better (a loss); max: higher is better (an accuracy)
    best_value: float = math.inf  # in "lower is better" units: negated for mode max
    best_epoch: int = -1
    bad_epochs: int = 0
    best_state: dict[str, torch.Tensor] | None = None
    best_probs: np.ndarray | None = None
    keep: int = 1  # epochs whose weights are kept for a soup; 1: the best one's only (best_state)
    kept: list[tuple[float, int, dict[str, torch.Tensor]]] = field(default_factory=list)  # (signed value, epoch, weights)

    def update(self, value: float, epoch: int, state: dict[str, torch.Tensor], probs: np.ndarray) -> bool:
        """Record one epoch; return whether it improved on the best so far."""
        signed = value if self.mode == "min" else -value
        if self.keep > 1:
            self.kept.append((signed, epoch, {k: v.detach().cpu().clone() for k, v in state.items()}))
            self.kept = sorted(self.kept, key=lambda entry: entry[:2])[: self.keep]
        if signed < self.best_value:
            self.best_value, self.best_epoch, self.bad_epochs = signed, epoch, 0
            self.best_state = {k: v.detach().cpu().clone() for k, v in state.items()}
            self.best_probs = probs
            return True
        self.bad_epochs += 1
        return False

    @property
    def should_stop(self) -> bool:
        return self.bad_epochs > self.patience

    def state_dict(self) -> dict:
        return dict(vars(self))

    def load_state_dict(self, state: dict) -> None:
        vars(self).update(state)


def average_states(states: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """The element-wise mean of state dicts (timm's avg_checkpoints); integer buffers (BatchNorm's counters) as the first's."""
    return {
        k: torch.stack([s[k].float() for s in states]).mean(0).to(v.dtype) if v.is_floating_point() else v.clone()
        for k, v in states[0].items()
    }  # fmt: skip
