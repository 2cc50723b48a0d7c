"""Photo-scale images: a memory-mapped decode cache, parallel decoding, exact statistics, sizes from the data."""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np
import pytest

from kagglecv.images import (
    FileImages,
    channel_stats,
    choose_img_size,
    decode_images,
    decode_into,
    resolve_sizes,
)
from kagglecv.params import ParamsError


def write_jpegs(folder: Path, n: int, size: int = 40, grey: bool = False, seed: int = 0) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        image = rng.integers(0, 256, (size, size + i % 3) if grey else (size, size + i % 3, 3), dtype=np.uint8)
        paths.append(folder / f"{i}.jpg")
        cv2.imwrite(str(paths[-1]), image)
    return paths


def test_the_cache_is_a_read_only_memory_map_written_once(tmp_path: Path) -> None:
    paths = write_jpegs(tmp_path / "img", 30)
    images = FileImages(tuple(paths), tmp_path / "cache").load(img_size=16)
    assert isinstance(images, np.memmap) and images.shape == (30, 16, 16, 3) and not images.flags.writeable
    cached = sorted((tmp_path / "cache").iterdir())
    assert [p.name[:6] for p in cached] == ["files-", "images"]  # the files' fingerprint, the images; no temporary
    mtime = cached[1].stat().st_mtime_ns
    again = FileImages(tuple(paths), tmp_path / "cache").load(img_size=16)
    np.testing.assert_array_equal(again, images)
    assert cached[1].stat().st_mtime_ns == mtime  # read back, not decoded again
    np.testing.assert_array_equal(images, decode_images(paths, img_size=16))  # the same pixels as in memory


def test_a_grey_set_is_cached_with_one_channel(tmp_path: Path) -> None:
    paths = write_jpegs(tmp_path / "img", 5, grey=True)
    images = FileImages(tuple(paths), tmp_path / "cache").load(img_size=8)
    assert images.shape == (5, 8, 8, 1)
    np.testing.assert_array_equal(images, decode_images(paths, img_size=8))
    assert FileImages(tuple(paths), tmp_path / "cache").load(img_size=8, channels=3).shape == (5, 8, 8, 3)


def test_parallel_decoding_gives_the_same_pixels_as_one_thread(tmp_path: Path) -> None:
    paths = write_jpegs(tmp_path / "img", 150)  # more than two decoding tasks
    one, many = (np.zeros((150, 12, 12, 3), np.uint8) for _ in range(2))
    assert decode_into(one, paths, workers=1) and decode_into(many, paths, workers=4)
    np.testing.assert_array_equal(one, many)


def test_a_broken_file_stops_the_decode_naming_it_and_leaves_no_cache(tmp_path: Path) -> None:
    paths = write_jpegs(tmp_path / "img", 10)
    paths[7].write_bytes(b"not an image")
    with pytest.raises(ValueError, match="7.jpg: not a readable image"):
        FileImages(tuple(paths), tmp_path / "cache").load(img_size=8)
    assert not list((tmp_path / "cache").glob("*.npy"))


def test_decoding_reports_progress_in_a_log(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    paths = write_jpegs(tmp_path / "img", 200, size=16)
    out = np.zeros((200, 8, 8, 3), np.uint8)
    from kagglecv import progress

    before, progress.LOG_EVERY_S = progress.LOG_EVERY_S, 0.0
    try:
        with caplog.at_level(logging.INFO):
            decode_into(out, paths, desc="decoding test")
    finally:
        progress.LOG_EVERY_S = before
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("decoding test:")]
    assert lines and all(" img/s, eta " in line for line in lines)
    assert lines[0].startswith("decoding test: 64/200 (32%)")


def test_channel_stats_are_exact_without_a_float_copy() -> None:
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (600, 9, 9, 3), dtype=np.uint8)
    mean, std = channel_stats(images)
    flat = images.reshape(-1, 3).astype(np.float64) / 255
    np.testing.assert_allclose(mean, flat.mean(0), rtol=1e-12)
    np.testing.assert_allclose(std, flat.std(0), rtol=1e-9)


@pytest.mark.parametrize(
    "side,device,expected", [(8, "cpu", 16), (28, "cpu", 28), (30, "cpu", 30), (320, "cpu", 32), (320, "cuda", 224), (96, "cuda", 96)]
)
def test_auto_img_size_is_the_median_side_within_the_device_s_range(side: int, device: str, expected: int) -> None:
    sizes = np.array([[side, side + 40], [side + 1, side], [side - 1, side + 5]])  # median shorter side: side
    assert choose_img_size(sizes, device) == expected


def test_a_number_forces_img_size_and_cache_size_must_not_be_smaller(tmp_path: Path) -> None:
    images = FileImages(tuple(write_jpegs(tmp_path / "img", 3, size=50)))
    assert resolve_sizes("auto", 0, images, "cpu") == (32, 32)
    assert resolve_sizes(20, 0, images, "cpu") == (20, 20)
    assert resolve_sizes("auto", 48, images, "cpu") == (32, 48)
    with pytest.raises(ParamsError, match="cache_size: 16 is below img_size 20"):
        resolve_sizes(20, 16, images, "cpu")
