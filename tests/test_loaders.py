"""The fast data path draws the same augmentations as albumentations and feeds the same pixels."""

import numpy as np
import pytest
import torch

from kagglecv.batch_transforms import build_batch_transforms
from kagglecv.engine import predict_probs, select_precision
from kagglecv.loaders import ImageDataset, TensorBatches, albumentations_batches, eval_batches, train_batches
from kagglecv.models import build_model
from kagglecv.transforms import build_transforms

N = 3000


def dot_images(n: int, size: int = 9) -> np.ndarray:
    """n copies of a (size, size, 1) image with one bright pixel in the centre."""
    images = np.zeros((n, size, size, 1), np.uint8)
    images[:, size // 2, size // 2] = 255
    return images


def shifts_of(batch: np.ndarray) -> np.ndarray:
    """(dy, dx) of the bright pixel in each (N, H, W) image relative to the centre."""
    c = batch.shape[1] // 2
    flat = batch.reshape(len(batch), -1).argmax(1)
    return np.stack([flat // batch.shape[2] - c, flat % batch.shape[2] - c], 1)


def albumentations_outputs(spec: list[dict], images: np.ndarray) -> np.ndarray:
    compose = build_transforms(spec=spec, seed=3)
    return np.stack([compose(image=im)["image"].reshape(im.shape) for im in images])[..., 0]


def batch_outputs(spec: list[dict], images: np.ndarray) -> np.ndarray:
    op = build_batch_transforms(spec)
    assert op is not None
    x = torch.from_numpy(images.transpose(0, 3, 1, 2).copy())
    return op(x, torch.Generator().manual_seed(3))[:, 0].numpy()


@pytest.mark.parametrize("dx,dy", [(2, 0), (0, 1), (-1, -2)])
def test_a_fixed_shift_moves_pixels_exactly_as_albumentations(dx, dy):
    images = dot_images(1)
    spec = [{"Affine": {"translate_px": {"x": [dx, dx], "y": [dy, dy]}, "p": 1.0}}]
    np.testing.assert_array_equal(batch_outputs(spec, images), albumentations_outputs(spec, images))


def test_shifts_stay_in_range_and_match_albumentations_distribution():
    spec = [{"Affine": {"translate_px": {"x": [-2, 2], "y": [-1, 1]}, "p": 0.8}}]
    ours, theirs = shifts_of(batch_outputs(spec, dot_images(N))), shifts_of(albumentations_outputs(spec, dot_images(N)))
    for shifts in (ours, theirs):
        assert shifts[:, 0].min() == -1 and shifts[:, 0].max() == 1
        assert shifts[:, 1].min() == -2 and shifts[:, 1].max() == 2
    # Identity share: 1 - p, plus p / 15 for the zero shift drawn at random.
    expected_identity = 0.2 + 0.8 / 15
    for shifts in (ours, theirs):
        share = np.mean((shifts == 0).all(1))
        assert abs(share - expected_identity) < 4 * np.sqrt(expected_identity / N)
    # Each non-zero shift has the same frequency in both paths, within sampling noise.
    for dy in (-1, 0, 1):
        for dx in (-2, -1, 1, 2):
            a = np.mean((ours == (dy, dx)).all(1))
            b = np.mean((theirs == (dy, dx)).all(1))
            assert abs(a - b) < 5 * np.sqrt(0.8 / 15 / N), (dy, dx, a, b)


@pytest.mark.parametrize(
    "args", [{"scale": 0.8, "rotate": 20, "translate_px": {"x": [2, 2], "y": [-1, -1]}}, {"scale": {"x": 0.7, "y": 1.2}, "rotate": -30}]
)
def test_a_fixed_scale_and_rotation_warp_as_albumentations(args):
    """Same geometry and sign conventions as albumentations' Affine: at most one grey level apart (rounding)."""
    x = np.linspace(0, 3, 30)
    images = (127 + 120 * np.sin(x[None, :, None] + 2 * x[:24, None, None] + np.arange(3))).astype(np.uint8)[None]
    spec = [{"Affine": {**args, "p": 1.0}}]
    ours = build_batch_transforms(spec)(torch.from_numpy(images.transpose(0, 3, 1, 2).copy()), torch.Generator())
    theirs = build_transforms(spec=spec, seed=0)(image=images[0])["image"]
    diff = np.abs(ours[0].numpy().transpose(1, 2, 0).astype(int) - theirs.astype(int))
    assert diff.max() <= 1 and np.abs(theirs.astype(int) - images[0]).mean() > 10  # the warp moved pixels


def test_rotations_match_albumentations_distribution():
    images = np.zeros((N, 33, 33, 1), np.uint8)
    images[:, 15:18, 27:30] = 255  # a blob 12 px right of the centre: its angle about the centre is the rotation
    spec = [{"Affine": {"rotate": [-20, 20], "p": 0.7}}]

    def angles(out: np.ndarray) -> np.ndarray:
        weights = out.astype(float)
        rows, cols = np.mgrid[:33, :33]
        cy, cx = (weights * rows).sum((1, 2)) / weights.sum((1, 2)), (weights * cols).sum((1, 2)) / weights.sum((1, 2))
        return np.degrees(np.arctan2(16 - cy, cx - 16))

    for a in (angles(batch_outputs(spec, images)), angles(albumentations_outputs(spec, images))):
        assert np.abs(a).max() < 20.5 and np.abs(a).max() > 19  # the range is reached, never exceeded
        assert abs(np.mean(np.abs(a) < 0.01) - 0.3) < 4 * np.sqrt(0.21 / N)  # untouched: 1 - p
        turned = np.abs(a[np.abs(a) >= 0.01])
        assert abs(turned.mean() - 10) < 4 * 20 / np.sqrt(12 * len(turned))  # |uniform(-20, 20)| has mean 10


@pytest.mark.parametrize("name,axis", [("HorizontalFlip", 1), ("VerticalFlip", 0)])
def test_flips_happen_at_the_configured_rate(name, axis):
    images = np.zeros((N, 5, 5, 1), np.uint8)
    images[:, 0, 0] = 255  # top-left corner: a flip moves it
    spec = [{name: {"p": 0.3}}]
    for out in (batch_outputs(spec, images), albumentations_outputs(spec, images)):
        flipped = np.mean(out[:, 0, 0] == 0)
        assert abs(flipped - 0.3) < 4 * np.sqrt(0.21 / N)
        moved = out[out[:, 0, 0] == 0]
        corner = (0, 4) if axis == 1 else (4, 0)
        assert (moved[:, corner[0], corner[1]] == 255).all()


def test_unsupported_transforms_fall_back_to_albumentations():
    assert build_batch_transforms([{"Rotate": {"limit": 10}}]) is None
    assert build_batch_transforms([{"Affine": {"translate_px": 2, "shear": 5}}]) is None
    loaders = train_batches(dot_images(10), np.zeros(10, int), [{"Rotate": {"limit": 10}}], batch_size=4, seed=0, fold=0)
    assert isinstance(loaders(0), torch.utils.data.DataLoader)
    fast = train_batches(dot_images(10), np.zeros(10, int), [{"HorizontalFlip": {}}], batch_size=4, seed=0, fold=0)
    assert isinstance(fast(0), TensorBatches)


def test_epochs_are_seeded_complete_and_reproducible():
    images = np.arange(20, dtype=np.uint8).reshape(20, 1, 1, 1)
    make = train_batches(images, np.arange(20), [], batch_size=6, seed=1, fold=0, loader="tensor")
    epoch0 = torch.cat([x.flatten() for x, _ in make(0)])
    assert len(make(0)) == 3 and len(epoch0) == 18  # drop_last keeps BatchNorm away from a batch of 2
    assert torch.equal(epoch0, torch.cat([x.flatten() for x, _ in make(0)]))
    assert not torch.equal(epoch0, torch.cat([x.flatten() for x, _ in make(1)]))
    labels = torch.cat([y for _, y in make(0)])
    assert torch.equal(labels, epoch0.long())  # labels travel with their images


def test_both_paths_give_the_same_predictions_on_unaugmented_data():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (50, 12, 12, 1), dtype=np.uint8)
    model = build_model(name="kcv_cnn", num_classes=4, in_chans=1, img_size=12).eval()
    kwargs = dict(precision=select_precision("off"), mean=torch.tensor([0.5]), std=torch.tensor([0.25]))
    fast = predict_probs(model, eval_batches(images, batch_size=16), **kwargs)
    general = torch.utils.data.DataLoader(ImageDataset(images, None), batch_size=16)
    np.testing.assert_allclose(fast, predict_probs(model, general, **kwargs), rtol=1e-5, atol=1e-6)
    loader = albumentations_batches(images, np.zeros(50, int), None, batch_size=50, seed=0, fold=0)(0)
    x, _ = next(iter(loader))
    assert x.dtype == torch.uint8 and x.shape == (50, 1, 12, 12)
