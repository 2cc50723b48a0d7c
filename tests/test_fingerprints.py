"""The decode cache is keyed by what the files hold, so a copy of the competition (a queued experiment's
workspace under .dvc/tmp/exps/) finds what the workspace decoded instead of decoding it again."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from kagglecv import fingerprints
from kagglecv import images as images_module
from kagglecv.fingerprints import files_key, shared_cache_dir
from kagglecv.images import FileImages
from kagglecv.ingest import find_bad_images, read_competition
from tests.hardening_fixtures import write_competition
from tests.test_layouts import write_image


def write_set(folder: Path, n: int = 6) -> list[Path]:
    rng = np.random.default_rng(3)
    folder.mkdir(parents=True)
    paths = [folder / f"img{i}.png" for i in range(n)]
    for i, path in enumerate(paths):
        write_image(path, i % 3, rng)
    return paths


def copy_set(paths: list[Path], folder: Path) -> list[Path]:
    """A copy as DVC checks one out: other paths, new modification times."""
    folder.mkdir(parents=True)
    copies = [folder / path.name for path in paths]
    for path, copy in zip(paths, copies):
        shutil.copyfile(path, copy)  # contents only: the copy's mtime is now
    return copies


def no_decoding(*_args, **_kwargs):
    raise AssertionError("decoded again")


def test_a_copy_with_new_paths_and_times_finds_the_decoded_images(tmp_path, monkeypatch):
    paths = write_set(tmp_path / "workspace/data/raw")
    cache = tmp_path / "workspace/data/cache"
    decoded = FileImages(tuple(paths), cache).load(img_size=8)
    copies = copy_set(paths, tmp_path / "elsewhere/data/raw")
    assert [c.stat().st_mtime_ns for c in copies] != [p.stat().st_mtime_ns for p in paths]
    monkeypatch.setattr(images_module, "decode_into", no_decoding)
    again = FileImages(tuple(copies), cache).load(img_size=8)
    np.testing.assert_array_equal(again, decoded)
    assert len(list(cache.glob("images-*.npy"))) == 1
    assert find_bad_images(copies, cache) == find_bad_images(paths, cache) == {}


def test_changed_content_is_decoded_again(tmp_path):
    paths = write_set(tmp_path / "raw")
    cache = tmp_path / "cache"
    before = files_key(paths, cache, 8, 0)
    first = np.array(FileImages(tuple(paths), cache).load(img_size=8))
    write_image(paths[2], 1, np.random.default_rng(99))  # another image under the same name
    assert files_key(paths, cache, 8, 0) != before
    second = FileImages(tuple(paths), cache).load(img_size=8)
    assert len(list(cache.glob("images-*.npy"))) == 2
    assert not np.array_equal(first[2], second[2]) and np.array_equal(first[0], second[0])


def test_order_and_extra_are_part_of_the_key(tmp_path):
    paths = write_set(tmp_path / "raw")
    key = files_key(paths, None, 8)
    assert files_key(paths[::-1], None, 8) != key
    assert files_key(paths, None, 16) != key
    assert files_key(copy_set(paths, tmp_path / "copy"), None, 8) == key


def test_the_content_digest_is_read_once_then_remembered(tmp_path, monkeypatch):
    paths = write_set(tmp_path / "raw")
    cache = tmp_path / "cache"
    key = files_key(paths, cache, 8)
    (memo,) = cache.glob("files-*.txt")
    monkeypatch.setattr("kagglecv.fingerprints.content_digest", no_decoding)
    assert files_key(paths, cache, 8) == key  # only stat()ed
    memo.write_text("garbage")  # a damaged memo is not trusted
    monkeypatch.undo()
    assert files_key(paths, cache, 8) == key
    assert len(memo.read_text().strip()) == 32


def counted_stats(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """The paths `fingerprints` stats from now on, in order: each file once per content key worked out."""
    stats, real = [], fingerprints._stat_line
    monkeypatch.setattr(fingerprints, "_stat_line", lambda path: stats.append(path) or real(path))
    return stats


def test_a_set_is_fingerprinted_once_for_all_its_cache_entries(tmp_path, monkeypatch):
    paths = write_set(tmp_path / "raw")
    cache = tmp_path / "cache"
    keys = {"sizes": files_key(paths, cache, "sizes"), "images": files_key(paths, cache, 8, 0)}
    stats = counted_stats(monkeypatch)
    images = FileImages(tuple(paths), cache)
    images.sizes()
    images.load(img_size=8)
    images.load(img_size=4, channels=3)
    assert stats == paths  # each file stat()ed once: one content key for the three entries
    assert [path.name for path in cache.glob("sizes-*.npy")] == [f"sizes-{keys['sizes']}.npy"]  # keys as before
    assert f"images-{keys['images']}.npy" in {path.name for path in cache.glob("images-*.npy")}


def test_a_stage_fingerprints_each_part_once(tmp_path, monkeypatch):
    raw = tmp_path / "data/raw"
    write_competition(raw)
    read_competition(raw)  # checks and caches the verdicts
    stats = counted_stats(monkeypatch)
    competition = read_competition(raw)  # as a stage starts: the ingest checks, then sizes and decoded images
    for images in (competition.train_images, competition.test_images):
        images.sizes()
        images.load(img_size=8)
    expected = [*competition.train_images.paths, *competition.test_images.paths]
    assert sorted(stats) == sorted(expected) and len(expected) == 16


def test_a_missing_file_has_a_key_of_its_own(tmp_path):
    paths = write_set(tmp_path / "raw")
    key = files_key(paths, None)
    paths[1].unlink()
    assert files_key(paths, None) != key


@pytest.mark.parametrize(
    ("cache", "shared"),
    [
        ("ws/.dvc/tmp/exps/tmpab12cd/data/cache", "ws/data/cache"),
        ("ws/data/cache", "ws/data/cache"),
        ("ws/.dvc/tmp/data/cache", "ws/.dvc/tmp/data/cache"),
    ],
)
def test_a_queued_experiments_copy_shares_the_workspaces_cache(tmp_path, cache, shared):
    assert shared_cache_dir(tmp_path / cache) == (tmp_path / shared).resolve()
