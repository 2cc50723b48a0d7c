"""Crops from the cache's detail, batch versions that draw as albumentations does, progress and ETA."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from kagglecv import progress
from kagglecv.batch_transforms import build_batch_transforms, resize_batch
from kagglecv.loaders import TensorBatches, eval_batches, train_batches
from kagglecv.progress import Progress, Tracked, format_seconds
from kagglecv.stages.train import EtaClock
from kagglecv.transforms import build_transforms

N = 2000


def box_images(n: int, side: int = 64) -> np.ndarray:
    """n (side, side, 1) images whose pixel value is its column index * 4 (so a crop shows where it came from)."""
    row = (np.arange(side) * 4).astype(np.uint8)
    return np.broadcast_to(row[None, None, :, None], (n, side, side, 1)).copy()


def test_batched_random_resized_crop_draws_crops_like_albumentations() -> None:
    spec = [{"RandomResizedCrop": {"size": [16, 16], "scale": [0.2, 1.0], "ratio": [0.75, 1.333]}}]
    images = box_images(N)
    op = build_batch_transforms(spec)
    assert op is not None
    ours = op(torch.from_numpy(images.transpose(0, 3, 1, 2).copy()), torch.Generator().manual_seed(0))
    assert ours.shape == (N, 1, 16, 16) and ours.dtype == torch.uint8
    compose = build_transforms(spec=spec, seed=0)
    theirs = np.stack([compose(image=im)["image"].reshape(16, 16) for im in images])
    ours = ours[:, 0].numpy().astype(float)
    # The span of columns a crop covers (first to last pixel value) estimates its width: same distribution.
    span_ours, span_theirs = ours[:, :, -1].mean(1) - ours[:, :, 0].mean(1), theirs[:, :, -1].mean(1) - theirs[:, :, 0].mean(1)
    assert abs(span_ours.mean() - span_theirs.mean()) < 0.05 * span_theirs.mean()
    assert abs(np.median(span_ours) - np.median(span_theirs)) < 0.08 * np.median(span_theirs)
    centre_ours, centre_theirs = ours.mean((1, 2)), theirs.mean((1, 2))
    assert abs(centre_ours.mean() - centre_theirs.mean()) < 3  # crop positions: same mean (pixel values)


def test_a_full_crop_of_a_square_image_is_the_image_resized() -> None:
    spec = [{"RandomResizedCrop": {"size": [16, 16], "scale": [1.0, 1.0], "ratio": [1.0, 1.0]}}]
    x = torch.from_numpy(box_images(4).transpose(0, 3, 1, 2).copy())
    out = build_batch_transforms(spec)(x, torch.Generator().manual_seed(0))
    expected = resize_batch(x, 16)
    assert (out.int() - expected.int()).abs().max() <= 2


def test_batched_brightness_contrast_matches_albumentations_per_image_rule() -> None:
    spec = [{"RandomBrightnessContrast": {"brightness_limit": 0.2, "contrast_limit": 0.3, "p": 0.7}}]
    images = np.full((N, 4, 4, 1), 100, np.uint8)
    ours = build_batch_transforms(spec)(torch.from_numpy(images.transpose(0, 3, 1, 2).copy()), torch.Generator().manual_seed(0))
    compose = build_transforms(spec=spec, seed=0)
    theirs = np.stack([compose(image=im)["image"] for im in images])
    a, b = ours.numpy().reshape(N, -1)[:, 0].astype(float), theirs.reshape(N, -1)[:, 0].astype(float)
    assert abs(np.mean(a == 100) - np.mean(b == 100)) < 0.04  # untouched share: 1 - p
    lo, hi = np.floor(100 * 0.7 - 0.2 * 255), np.floor(100 * 1.3 + 0.2 * 255)
    assert lo <= a.min() and a.max() <= hi and lo <= b.min() and b.max() <= hi
    assert abs(a.mean() - b.mean()) < 2 and abs(a.std() - b.std()) < 0.1 * b.std()


def test_batches_come_out_at_img_size_from_a_larger_cache() -> None:
    images = box_images(40, side=32)
    make = train_batches(images, np.zeros(30, int), [{"HorizontalFlip": {}}], rows=np.arange(10, 40), batch_size=8,
                         seed=0, fold=0, size=16)  # fmt: skip
    batches = make(0)
    assert isinstance(batches, TensorBatches) and {tuple(x.shape) for x, _ in batches} == {(8, 1, 16, 16)}
    general = train_batches(images, np.zeros(30, int), [{"Rotate": {"limit": 5}}], rows=np.arange(10, 40), batch_size=8,
                            seed=0, fold=0, size=16)(0)  # fmt: skip
    assert {tuple(x.shape[1:]) for x, _ in general} == {(1, 16, 16)}
    crop = build_transforms(spec=[{"CenterCrop": {"height": 24, "width": 24}}], seed=0, key="augment_test")
    held_out = list(eval_batches(images, rows=np.array([3, 1]), batch_size=4, transform=crop, size=12))
    x, _ = held_out[0]
    assert x.shape == (2, 1, 12, 12)
    expected = resize_batch(torch.from_numpy(images[[3, 1], 4:28, 4:28].transpose(0, 3, 1, 2).copy()), 12)
    assert torch.equal(x, expected)  # centre crop of the cached image, then brought to img_size


def test_rows_select_images_and_their_labels_travel_with_them() -> None:
    images = np.arange(30, dtype=np.uint8).reshape(30, 1, 1, 1)
    rows = np.arange(0, 30, 3)
    make = train_batches(images, rows * 10, [], rows=rows, batch_size=4, seed=2, fold=0, loader="tensor")
    seen = [(x.flatten(), y) for x, y in make(0)]
    pixels, labels = torch.cat([p for p, _ in seen]), torch.cat([y for _, y in seen])
    assert set(pixels.tolist()) <= set(rows.tolist()) and len(pixels) == 8
    assert torch.equal(labels, pixels.long() * 10)


def test_progress_lines_carry_count_rate_and_eta(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO):
        items = list(Tracked(range(5), "fold 0 epoch 1", every=0.0))
    assert items == list(range(5))
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0].startswith("fold 0 epoch 1: 1/5 (20%)") and "batch/s, eta" in lines[0]
    assert len(lines) == 4  # every batch but the last, which the epoch's own line reports
    assert len(Tracked([1, 2, 3], "x")) == 3
    assert progress.LOG_EVERY_S <= 30


def test_a_progress_bar_replaces_lines_on_a_terminal(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO), Progress(3, "bar", bar=True, every=0.0) as shown:
        for _ in range(3):
            shown.update()
    assert shown.bar is not None and shown.bar.n == 3 and not caplog.records


def test_the_eta_is_an_upper_bound_that_reaches_zero_on_the_last_epoch() -> None:
    clock = EtaClock(n_folds=2, epochs=3)
    assert clock.after(0, 0, 10.0) == pytest.approx(50.0)  # 2 more in fold 0, 3 in fold 1
    assert clock.after(0, 1, 30.0) == pytest.approx(80.0)  # mean 20 s x 4 epochs
    assert clock.after(1, 0, 20.0) == pytest.approx(40.0)  # fold 0 stopped early: its last epoch drops out
    assert clock.after(1, 2, 20.0) == 0.0
    assert format_seconds(3725) == "1h02m" and format_seconds(245) == "4m05s" and format_seconds(37.4) == "37s"
