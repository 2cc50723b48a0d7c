"""Batches for the engine: uint8 images (B, C, H, W) and int64 labels.

Two data paths, chosen by `loader` in params.yaml:
- `tensor`: the whole set is one uint8 tensor (on the GPU when there is one); each epoch is a
  seeded permutation, sliced into batches that are augmented whole (`batch_transforms`).
  No per-image Python, no float copy of the data set.
- `dataloader`: albumentations per image in a torch DataLoader (with worker processes if asked),
  for transforms that have no batch version.
`auto` takes `tensor` whenever every `augment:` entry has a batch version.

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

from kagglecv.batch_transforms import build_batch_transforms
from kagglecv.transforms import ImageDataset, build_transforms


def epoch_seed(seed: int, fold: int, epoch: int) -> int:
    return (seed * 1_000_003 + fold * 10_007 + epoch) % 2**31


def _seed_worker(worker_id: int, *, transform: A.Compose | None, base: int) -> None:
    if transform is not None:
        transform.set_random_seed(base + 7919 * (worker_id + 1))


class TensorBatches:
    """Batches sliced from one uint8 tensor (N, C, H, W) in a seeded order, augmented whole."""

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        *,
        batch_size: int,
        seed: int | None = None,
        augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None,
        drop_last: bool = False,
    ) -> None:
        self.images, self.labels = images, labels
        self.batch_size, self.seed, self.augment, self.drop_last = batch_size, seed, augment, drop_last

    def __len__(self) -> int:
        n = len(self.images)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self):
        n = len(self.images)
        generator = torch.Generator().manual_seed(self.seed if self.seed is not None else 0)
        order = torch.randperm(n, generator=generator) if self.seed is not None else torch.arange(n)
        order = order.to(self.images.device)
        for i in range(len(self)):
            index = order[i * self.batch_size : (i + 1) * self.batch_size]
            x = self.images[index]
            if self.augment is not None:
                x = self.augment(x, generator)
            yield x, self.labels[index]


def to_tensor_images(images: np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
    """uint8 (N, H, W, C) array -> uint8 (N, C, H, W) tensor on `device`, copied once."""
    return torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2))).to(device)


def train_batches(
    images: np.ndarray,
    labels: np.ndarray,
    spec: list[dict],
    *,
    batch_size: int,
    seed: int,
    fold: int,
    num_workers: int = 0,
    loader: str = "auto",
    device: torch.device | str = "cpu",
) -> Callable[[int], TensorBatches | DataLoader]:
    """`epoch -> batches`: shuffled, augmented (images, labels) of one fold's training part.

    `spec` is the `augment:` list; `loader` picks the data path (see the module docstring).
    """
    transform = build_transforms(spec=spec, seed=seed + fold)  # validates names and arguments either way
    batch_ops = build_batch_transforms(spec) if loader != "dataloader" else None
    if loader == "tensor" and batch_ops is None:
        raise ValueError("loader: tensor needs every augment entry to have a batch version; use auto or dataloader")
    if batch_ops is not None:
        x, y = to_tensor_images(images, device), torch.from_numpy(labels.astype(np.int64)).to(device)
        drop = len(x) > batch_size  # a batch of one breaks BatchNorm
        return lambda epoch: TensorBatches(
            x, y, batch_size=batch_size, seed=epoch_seed(seed, fold, epoch), augment=batch_ops, drop_last=drop
        )
    return albumentations_batches(
        images, labels, transform,
        batch_size=batch_size, seed=seed, fold=fold, num_workers=num_workers,
    )  # fmt: skip


def albumentations_batches(
    images: np.ndarray,
    labels: np.ndarray,
    transform: A.Compose | None,
    *,
    batch_size: int,
    seed: int,
    fold: int,
    num_workers: int = 0,
) -> Callable[[int], DataLoader]:
    """`epoch -> DataLoader`: albumentations applied per image, the general path."""
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


def eval_batches(images: np.ndarray, *, batch_size: int, device: torch.device | str = "cpu") -> TensorBatches:
    """Un-augmented batches in the order of `images` (labels are -1)."""
    x = to_tensor_images(images, device)
    return TensorBatches(x, torch.full((len(x),), -1, dtype=torch.int64), batch_size=batch_size)
