"""The anonymous memory of every stage is bounded by the batch, not by the size of the data set; and of
a memory-mapped decode cache a process keeps at most `memory.MAPPED_BYTES` and the rows in hand mapped."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from kagglecv import memory
from kagglecv.images import FileImages, channel_stats, decode_into
from kagglecv.loaders import ImageDataset, eval_batches, train_batches
from kagglecv.memory import MAP_GRANULE, RowReader, mapped_mb, read_blocks, read_rows
from kagglecv.resume import resume_key
from tests.conftest import REPO

SMALL, LARGE = 1000, 6000  # training images of 96 px: 28 MB and 166 MB decoded
DECODED_LARGE_MB = LARGE * 96 * 96 * 3 / 2**20
LIMIT = 1 << 20  # memory.MAPPED_BYTES in these tests, far below the sets
MB = 2**20
SIDE = 128  # 48 KB rows, as the photo competition's at img_size 128


@pytest.fixture
def limit(monkeypatch: pytest.MonkeyPatch) -> int:
    monkeypatch.setattr(memory, "MAPPED_BYTES", LIMIT)
    return LIMIT


def mapped_set(path: Path, n: int = 1000) -> np.ndarray:
    """A memory-mapped cache of n random (SIDE, SIDE, 3) images (47 MB), none of it mapped yet."""
    np.save(path, np.random.default_rng(0).integers(0, 256, (n, SIDE, SIDE, 3), dtype=np.uint8))
    images = np.load(path, mmap_mode="r")
    assert mapped_mb(path) == 0
    return images


def bound_mb(limit: int, rows: int, row_bytes: int, *, contiguous: bool = False) -> float:
    """The budget, and what reading `rows` rows may map besides: the rows and a granule at each end of each
    (of the block when `contiguous`)."""
    return (limit + rows * row_bytes + 2 * MAP_GRANULE * (1 if contiguous else rows)) / MB


def test_batches_and_single_images_are_read_without_mapping_the_cache(tmp_path: Path) -> None:
    path = tmp_path / "images.npy"
    images = mapped_set(path)
    epoch = train_batches(images, np.zeros(len(images), np.int64), [{"HorizontalFlip": {"p": 0.5}}], batch_size=8,
                          seed=0, fold=0, loader="tensor")  # fmt: skip
    for batches in (epoch(0), eval_batches(images, rows=np.arange(0, len(images), 2), batch_size=8)):
        assert max(mapped_mb(path) for i, _ in enumerate(batches) if i % 4 == 0) == 0  # as a batch is handed out
    dataset = ImageDataset(images, np.zeros(len(images), np.int64), rows=np.arange(len(images))[::-1])
    assert max(mapped_mb(path) for i in range(len(dataset)) if dataset[i] and i % 40 == 0) == 0


def test_rows_read_from_the_file_are_the_rows_of_the_map(tmp_path: Path) -> None:
    path = tmp_path / "images.npy"
    images, expected = mapped_set(path, n=50), np.load(path)  # the second in memory
    rows = np.array([7, 0, 49, 7, 3])
    np.testing.assert_array_equal(read_rows(images, rows), expected[rows])
    view = images[10:]  # not the whole file: read through the map, whose pages are released after
    np.testing.assert_array_equal(read_rows(view, rows[[0, 1, 4]]), expected[10 + rows[[0, 1, 4]]])
    assert mapped_mb(path) == 0
    with pytest.raises(IndexError, match="row 50 is outside the 50 images"):
        read_rows(images, np.array([50]))


def test_a_dataset_opens_its_cache_file_once_per_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path, opened = tmp_path / "images.npy", tmp_path / "opened.txt"
    images, expected = mapped_set(path, n=100), np.load(path)
    real_open = os.open

    def logged_open(file: str, *args: object, **kwargs: object) -> int:
        if Path(file) == path:
            with open(opened, "a") as log:  # io's open: not through os.open
                log.write(f"{os.getpid()}\n")
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(os, "open", logged_open)
    dataset = ImageDataset(images, np.zeros(len(images), np.int64))
    read = torch.stack([dataset[i][0] for i in range(len(dataset))])  # 100 single rows, as the DataLoader path reads
    assert opened.read_text().split() == [str(os.getpid())]
    loader = torch.utils.data.DataLoader(dataset, batch_size=10, num_workers=2)  # forked after the file was opened
    in_workers = torch.cat([x for x, _ in loader])
    pids = opened.read_text().split()
    assert len(pids) == len(set(pids)) == 3, pids  # this process, then each worker its own
    for x in (read, in_workers):
        np.testing.assert_array_equal(x.permute(0, 2, 3, 1).numpy(), expected)  # (N, C, H, W) -> (N, H, W, C)
    assert mapped_mb(path) == 0


def test_readers_leave_no_descriptor_open(tmp_path: Path) -> None:
    path = tmp_path / "images.npy"
    images, expected = mapped_set(path, n=20), np.load(path)
    before = len(os.listdir("/proc/self/fd"))
    for i in range(50):
        dataset = ImageDataset(images, None)  # the last one's reader is collected with it
        np.testing.assert_array_equal(dataset[i % 20][0].permute(1, 2, 0).numpy(), expected[i % 20])
        np.testing.assert_array_equal(read_rows(images, np.array([i % 20])), expected[[i % 20]])
    reader = RowReader(images)
    reader.read(np.array([1]))
    copy = pickle.loads(pickle.dumps(reader))  # as a process that is not forked gets it: opens a file of its own
    np.testing.assert_array_equal(copy.read(np.array([2, 1])), expected[[2, 1]])
    reader.close()
    del dataset, copy
    assert len(os.listdir("/proc/self/fd")) == before


def test_blocks_come_with_their_start_and_leave_the_set_unmapped(tmp_path: Path, limit: int) -> None:
    path = tmp_path / "images.npy"
    images, expected = mapped_set(path, n=50), np.load(path)
    starts = []
    for start, block in read_blocks(images, 16):
        starts.append(start)
        np.testing.assert_array_equal(block, expected[start : start + 16])
    assert starts == [0, 16, 32, 48]
    assert mapped_mb(path) == 0


def test_passes_over_the_whole_set_leave_it_unmapped(tmp_path: Path, limit: int) -> None:
    path = tmp_path / "images.npy"
    images = mapped_set(path)
    mean, std = channel_stats(images)
    assert mapped_mb(path) == 0
    key = resume_key({}, images)
    assert mapped_mb(path) == 0
    in_memory = np.array(images)
    assert (mean, std, key) == (*channel_stats(in_memory), resume_key({}, in_memory))  # the same numbers


def test_decoding_into_the_cache_keeps_the_budget_mapped(tmp_path: Path, limit: int) -> None:
    rng = np.random.default_rng(0)
    (tmp_path / "img").mkdir()
    paths = [tmp_path / "img" / f"{i}.jpg" for i in range(600)]
    for path in paths:
        cv2.imwrite(str(path), rng.integers(0, 256, (SIDE, SIDE, 3), dtype=np.uint8))
    path = tmp_path / "out.npy"
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=(600, SIDE, SIDE, 3))  # 28 MB
    peak, done = [0.0], threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], mapped_mb(path))

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        decode_into(out, paths, workers=2)
    finally:
        done.set()
        sampler.join()
    chunks = 4 * 64  # the one counted last, those of the 2 threads, one done but not yet counted
    assert 0 < peak[0] <= bound_mb(limit, chunks, out[0].nbytes, contiguous=True), peak  # 15 MB
    assert mapped_mb(path) == 0
    del out
    cached = FileImages(tuple(paths), tmp_path / "cache").load(img_size=SIDE)  # decoded, then copied to its final file
    np.testing.assert_array_equal(cached, np.load(path))  # pages released while written lose nothing


def peaks(work: Path, n_train: int) -> dict[str, dict[str, float]]:
    out = subprocess.run([sys.executable, "-m", "tests.memory_probe", str(work), str(n_train)], cwd=REPO,
                         capture_output=True, text=True, check=True, timeout=600)  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_stage_memory_does_not_grow_with_the_data_set(tmp_path: Path) -> None:
    small, large = peaks(tmp_path / "small", SMALL), peaks(tmp_path / "large", LARGE)
    assert set(large) == {"split", "train", "predict"}
    for stage in large:
        for kind in ("anon", "file"):
            growth = large[stage][kind] - small[stage][kind]
            # Holding the decoded set once would add 166 MB (anonymous, or mapped pages of the cache); a copy, twice that.
            # Measured: at most 31 MB (train's file-backed pages, 24-31 MB from run to run), the rest under 10 MB.
            assert growth < 0.25 * DECODED_LARGE_MB, (stage, kind, small, large)
        assert large[stage]["anon"] < 64, (stage, large)  # MB above the libraries: batches, model, bookkeeping
