"""Losses by name, for integer labels (B,) or the soft targets (B, K) that mixup produces; for a
multilabel task, for 0/1 targets (B, K) of a sigmoid per label (binary cross-entropy, or torchvision's
sigmoid focal loss).

Cross-entropy is torch's own (it takes class weights, label smoothing and soft targets). Focal
loss and mean-squared error on the softmax output have no multi-class version in torch or timm,
so they are written here, a few lines each, with the same target conventions.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from timm.data import Mixup
from torch import nn
from torchvision.ops import sigmoid_focal_loss

LOSSES = ("cross_entropy", "focal", "mse")


def soft_targets(target: torch.Tensor, num_classes: int, label_smoothing: float = 0.0) -> torch.Tensor:
    """Integer labels (B,) -> smoothed one-hot (B, K); soft targets (B, K) smoothed alike, as torch's
    cross-entropy smooths them (mixup's arrive smoothed already, with the loss's smoothing 0)."""
    t = target.float() if target.ndim == 2 else F.one_hot(target, num_classes).float()
    return t * (1.0 - label_smoothing) + label_smoothing / num_classes


class FocalLoss(nn.Module):
    """Softmax focal loss (Lin et al. 2017): cross-entropy scaled by (1 - p)**gamma, per class."""

    def __init__(self, gamma: float, weight: torch.Tensor | None = None, label_smoothing: float = 0.0) -> None:
        super().__init__()
        self.gamma = gamma
        self.label_smoothing = label_smoothing
        self.register_buffer("weight", weight)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        log_p = F.log_softmax(logits.float(), dim=1)  # (B, K)
        t = soft_targets(target, logits.shape[1], self.label_smoothing)
        terms = -t * (1.0 - log_p.exp()).pow(self.gamma) * log_p
        if self.weight is not None:
            terms = terms * self.weight
        return terms.sum(1).mean()


class SoftmaxMSELoss(nn.Module):
    """Squared error between softmax probabilities and (one-hot) targets, summed over classes."""

    def __init__(self, weight: torch.Tensor | None = None, label_smoothing: float = 0.0) -> None:
        super().__init__()
        self.label_smoothing = label_smoothing
        self.register_buffer("weight", weight)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        t = soft_targets(target, logits.shape[1], self.label_smoothing)
        terms = (F.softmax(logits.float(), dim=1) - t).pow(2)
        if self.weight is not None:
            terms = terms * self.weight
        return terms.sum(1).mean()


class MultilabelLoss(nn.Module):
    """Per-label sigmoid losses on 0/1 targets (B, K), smoothed towards 0.5: binary cross-entropy, or the
    focal loss of Lin et al. (torchvision's, gamma `focal_gamma`, no alpha balancing)."""

    def __init__(self, name: str, focal_gamma: float, label_smoothing: float) -> None:
        super().__init__()
        if name not in ("cross_entropy", "focal"):
            raise ValueError(f"loss: {name} has no multilabel form; use cross_entropy (binary) or focal")
        self.name, self.gamma, self.label_smoothing = name, focal_gamma, label_smoothing

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        t = target.float() * (1.0 - self.label_smoothing) + self.label_smoothing / 2
        if self.name == "focal":
            return sigmoid_focal_loss(logits.float(), t, alpha=-1, gamma=self.gamma, reduction="mean")
        return F.binary_cross_entropy_with_logits(logits.float(), t)


def build_loss(
    *, name: str, label_smoothing: float = 0.0, focal_gamma: float = 2.0, class_weights: torch.Tensor | None = None,
    multilabel: bool = False,
) -> nn.Module:  # fmt: skip
    """`loss:` from params; `class_weights` (K,) up-weights rare classes (single-label only)."""
    if multilabel:
        return MultilabelLoss(name, focal_gamma, label_smoothing)
    if name == "cross_entropy":
        return nn.CrossEntropyLoss(weight=class_weights, label_smoothing=label_smoothing)
    if name == "focal":
        return FocalLoss(focal_gamma, class_weights, label_smoothing)
    if name == "mse":
        return SoftmaxMSELoss(class_weights, label_smoothing)
    raise ValueError(f"loss: unknown loss {name!r}; choose one of {', '.join(LOSSES)}")


def inverse_frequency(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Per-class weights (K,) proportional to 1 / count, averaging 1 over the training images."""
    counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
    weights = np.where(counts > 0, 1.0 / np.maximum(counts, 1), 0.0)
    return weights * len(labels) / max(float((weights * counts).sum()), 1e-12)


def build_mixup(
    *, mixup_alpha: float, cutmix_alpha: float, prob: float, switch_prob: float, label_smoothing: float, num_classes: int
) -> Mixup | None:
    """timm's batch Mixup/CutMix, or None when both alphas are 0. It draws from NumPy's global RNG."""
    if prob <= 0 or (mixup_alpha <= 0 and cutmix_alpha <= 0):
        return None
    return Mixup(
        mixup_alpha=mixup_alpha, cutmix_alpha=cutmix_alpha, prob=prob, switch_prob=switch_prob,
        label_smoothing=label_smoothing, num_classes=num_classes,
    )  # fmt: skip
