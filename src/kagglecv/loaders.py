"""Batches for the engine: uint8 images (B, C, H, W) and int64 labels.

Every epoch's order and augmentation derive from (seed, fold, epoch) alone, so an epoch is the
same whether or not the epochs before it ran in this process.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import albumentations as A
import numpy as np
import torch
from torch.utils.data import DataLoader

from kagglecv.transforms import ImageDataset


def epoch_seed(seed: int, fold: int, epoch: int) -> int:
    return (seed * 1_000_003 + fold * 10_007 + epoch) % 2**31


def _seed_worker(worker_id: int, *, transform: A.Compose | None, base: int) -> None:
    if transform is not None:
        transform.set_random_seed(base + 7919 * (worker_id + 1))


def train_batches(
    images: np.ndarray,
    labels: np.ndarray,
    transform: A.Compose | None,
    *,
    batch_size: int,
    seed: int,
    fold: int,
    num_workers: int = 0,
) -> Callable[[int], DataLoader]:
    """`epoch -> DataLoader`: shuffled, augmented batches of (images, labels)."""
    dataset = ImageDataset(images, labels, transform)

    def for_epoch(epoch: int) -> DataLoader:
        base = epoch_seed(seed, fold, epoch)
        if transform is not None:
            transform.set_random_seed(base)
        return DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=True,
            drop_last=len(dataset) > batch_size,  # a batch of one breaks BatchNorm
            generator=torch.Generator().manual_seed(base),
            num_workers=num_workers,
            worker_init_fn=partial(_seed_worker, transform=transform, base=base) if num_workers else None,
            persistent_workers=False,
        )

    return for_epoch


def eval_batches(images: np.ndarray, *, batch_size: int, num_workers: int = 0) -> DataLoader:
    """Un-augmented batches in the order of `images`."""
    return DataLoader(ImageDataset(images, None), batch_size=batch_size, shuffle=False, num_workers=num_workers)
