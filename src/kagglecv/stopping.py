"""Early stopping on a validation metric, keeping the best epoch's weights and probabilities."""

from __future__ import annotations

import math
from dataclasses import dataclass

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

    def update(self, value: float, epoch: int, state: dict[str, torch.Tensor], probs: np.ndarray) -> bool:
        """Record one epoch; return whether it improved on the best so far."""
        signed = value if self.mode == "min" else -value
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
