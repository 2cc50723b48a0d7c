"""Batches for the engine: uint8 images (B, C, H, W) and labels (int64 classes, or float32 0/1 rows (B, K) for
a multilabel task), gathered a batch at a time.

The images arrive as one uint8 array (N, H, W, C), usually the memory-mapped decode cache
(`kagglecv.images`), with the row indices a loader covers; no loader copies the set, and the rows of
a batch are read from the cache's file (`memory.read_rows`), so none of its pages stays mapped in
the process. Two paths, chosen by `loader` in params.yaml:
- `tensor`: each epoch is a seeded permutation of the rows; each batch is gathered from the array
  and augmented whole (`batch_transforms`), on the GPU when there is one. A set that fits in a
  quarter of the GPU's memory is copied there once instead.
- `dataloader`: albumentations per image in a torch DataLoader (with worker processes if asked),
  for transforms that have no batch version.
`auto` takes `tensor` whenever every `augment:` entry has a batch version.

Pipelines run on the cached images; when the cache is larger than `img_size` (`cache_size`), a
batch that does not come out at `img_size` is resized to it last. Every epoch's order and
augmentation derive from (seed, fold, epoch) alone, so an epoch is the same whether or not the
epochs before it ran in this process.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import albumentations as A
import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader

from kagglecv.batch_transforms import build_batch_transforms, resize_batch
from kagglecv.memory import RowReader, read_blocks, read_rows
from kagglecv.transforms import apply_transforms, build_transforms

RESIDENT_SHARE = 0.25  # a training set up to this share of the GPU's memory is copied there once

BatchOp = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


class ImageDataset(torch.utils.data.Dataset):
    """The uint8 images (N, H, W, C) at `rows` (all by default; `labels` are theirs), each through
    `transform` and brought to `size`; yields ((C, H, W) uint8 tensor, label). A memory-mapped cache's file
    is opened once in each process that reads it (`memory.RowReader`)."""

    def __init__(
        self, images: np.ndarray, labels: np.ndarray | None, transform: A.Compose | None = None, *,
        rows: np.ndarray | None = None, size: int | None = None,
    ) -> None:  # fmt: skip
        self.images, self.reader = images, RowReader(images)
        self.rows = np.arange(len(images)) if rows is None else np.asarray(rows, dtype=np.int64)
        self.labels = labels
        self.transform = transform
        self.size = size

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        image = self.reader.read(self.rows[i : i + 1])[0]  # from the cache file, never mapped
        if self.transform is not None:
            image = self.transform(image=image)["image"]
            if image.ndim == 2:  # some transforms drop a single channel axis
                image = image[:, :, None]
        if self.size is not None and image.shape[:2] != (self.size, self.size):
            channels = image.shape[2]
            image = cv2.resize(image, (self.size, self.size), interpolation=cv2.INTER_AREA).reshape(self.size, self.size, channels)
        label = -1 if self.labels is None else as_label(self.labels[i])
        return torch.from_numpy(np.array(image.transpose(2, 0, 1))), label  # (H, W, C) -> (C, H, W), a writable copy


def as_label(label: np.ndarray | np.integer) -> int | torch.Tensor:
    """One image's label: a class index, or its 0/1 row (K,) float32 for a multilabel task."""
    return torch.from_numpy(np.asarray(label, np.float32)) if np.ndim(label) else int(label)


def label_tensor(labels: np.ndarray) -> torch.Tensor:
    """Class indices (N,) as int64; 0/1 rows (N, K) of a multilabel task as float32."""
    labels = np.asarray(labels)
    return torch.tensor(labels, dtype=torch.float32 if labels.ndim == 2 else torch.int64)


def epoch_seed(seed: int, fold: int, epoch: int) -> int:
    return (seed * 1_000_003 + fold * 10_007 + epoch) % 2**31


def _seed_worker(worker_id: int, *, transform: A.Compose | None, base: int) -> None:
    if transform is not None:
        transform.set_random_seed(base + 7919 * (worker_id + 1))


def gather(images: np.ndarray | torch.Tensor, rows: np.ndarray, device: torch.device | str) -> torch.Tensor:
    """uint8 (B, C, H, W) on `device` of the `rows` of `images`: an (N, H, W, C) array (read a batch at a
    time, from the file of a memory-mapped cache (`memory.read_rows`), pinned for the copy to a GPU) or an
    (N, C, H, W) tensor already on the device."""
    if isinstance(images, torch.Tensor):
        return images[torch.from_numpy(rows).to(images.device)]
    x = torch.from_numpy(read_rows(images, rows)).permute(0, 3, 1, 2).contiguous()  # (B, H, W, C) -> (B, C, H, W)
    if torch.device(device).type == "cuda":
        return x.pin_memory().to(device, non_blocking=True)
    return x


class TensorBatches:
    """Batches of the images at `rows` (all by default) in a seeded order, gathered one batch at a time,
    prepared (`prepare`: a deterministic per-image pipeline on (B, H, W, C)), augmented whole and
    brought to `size`. `labels` are those of `rows`, in that order."""

    def __init__(
        self,
        images: np.ndarray | torch.Tensor,
        labels: np.ndarray,
        *,
        rows: np.ndarray | None = None,
        batch_size: int,
        seed: int | None = None,
        augment: BatchOp | None = None,
        prepare: Callable[[np.ndarray], np.ndarray] | None = None,
        size: int | None = None,
        drop_last: bool = False,
        device: torch.device | str = "cpu",
    ) -> None:
        self.images, self.labels = images, label_tensor(labels)
        self.rows = np.arange(len(images)) if rows is None else np.asarray(rows, dtype=np.int64)
        self.batch_size, self.seed, self.augment, self.prepare = batch_size, seed, augment, prepare
        self.size, self.drop_last, self.device = size, drop_last, device

    def __len__(self) -> int:
        n = len(self.rows)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self):
        n = len(self.rows)
        generator = torch.Generator().manual_seed(self.seed if self.seed is not None else 0)
        order = torch.randperm(n, generator=generator) if self.seed is not None else torch.arange(n)
        for i in range(len(self)):
            index = order[i * self.batch_size : (i + 1) * self.batch_size]
            rows = self.rows[index.numpy()]
            if self.prepare is not None:
                x = torch.from_numpy(self.prepare(read_rows(self.images, rows))).permute(0, 3, 1, 2).contiguous().to(self.device)
            else:
                x = gather(self.images, rows, self.device)
            if self.augment is not None:
                x = self.augment(x, generator)
            if self.size is not None:
                x = resize_batch(x, self.size)
            yield x, self.labels[index].to(x.device)


def resident(images: np.ndarray, device: torch.device | str) -> np.ndarray | torch.Tensor:
    """`images` (N, H, W, C) copied once to a GPU as (N, C, H, W) when they fit in `RESIDENT_SHARE` of its
    memory (copied a block at a time, so the host never holds a second copy); else `images` as they are."""
    device = torch.device(device)
    if device.type != "cuda" or images.nbytes > RESIDENT_SHARE * torch.cuda.get_device_properties(device).total_memory:
        return images
    out = torch.empty((len(images), images.shape[3], images.shape[1], images.shape[2]), dtype=torch.uint8, device=device)
    step = 1024
    for start, block in read_blocks(images, step):
        out[start : start + len(block)] = gather(block, np.arange(len(block)), device)
    return out


def train_batches(
    images: np.ndarray | torch.Tensor,
    labels: np.ndarray,
    spec: list[dict],
    *,
    rows: np.ndarray | None = None,
    batch_size: int,
    seed: int,
    fold: int,
    size: int | None = None,
    num_workers: int = 0,
    loader: str = "auto",
    device: torch.device | str = "cpu",
) -> Callable[[int], TensorBatches | DataLoader]:
    """`epoch -> batches`: shuffled, augmented (images, labels) of `rows` of `images` (`labels` are theirs).

    `spec` is the `augment:` list; `loader` picks the data path (see the module docstring); `size` is
    the side every batch ends at (None: as the pipeline leaves it).
    """
    transform = build_transforms(spec=spec, seed=seed + fold)  # validates names and arguments either way
    batch_ops = build_batch_transforms(spec) if loader != "dataloader" else None
    if loader == "tensor" and batch_ops is None:
        raise ValueError("loader: tensor needs every augment entry to have a batch version; use auto or dataloader")
    rows = np.arange(len(images)) if rows is None else np.asarray(rows, dtype=np.int64)
    drop = len(rows) > batch_size  # a batch of one breaks BatchNorm
    if batch_ops is not None:
        return lambda epoch: TensorBatches(
            images, labels, rows=rows, batch_size=batch_size, seed=epoch_seed(seed, fold, epoch), augment=batch_ops,
            size=size, drop_last=drop, device=device,
        )  # fmt: skip
    if isinstance(images, torch.Tensor):
        raise ValueError("the dataloader path reads images from the host; pass the array, not a device tensor")
    return albumentations_batches(
        images, labels, transform,
        rows=rows, batch_size=batch_size, seed=seed, fold=fold, size=size, num_workers=num_workers,
    )  # fmt: skip


def albumentations_batches(
    images: np.ndarray,
    labels: np.ndarray,
    transform: A.Compose | None,
    *,
    rows: np.ndarray | None = None,
    batch_size: int,
    seed: int,
    fold: int,
    size: int | None = None,
    num_workers: int = 0,
) -> Callable[[int], DataLoader]:
    """`epoch -> DataLoader`: albumentations applied per image, the general path."""
    dataset = ImageDataset(images, labels, transform, rows=rows, size=size)

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


def eval_batches(
    images: np.ndarray,
    *,
    rows: np.ndarray | None = None,
    batch_size: int,
    transform: A.Compose | None = None,
    size: int | None = None,
    device: torch.device | str = "cpu",
) -> TensorBatches:
    """Un-augmented batches of `rows` of `images` in their order (labels are -1), each through the
    deterministic `transform` (`augment_test`) and brought to `size`."""
    prepare = partial(apply_transforms, transform=transform) if transform is not None and transform.transforms else None
    n = len(images) if rows is None else len(rows)
    return TensorBatches(images, np.full(n, -1), rows=rows, batch_size=batch_size, prepare=prepare, size=size, device=device)
