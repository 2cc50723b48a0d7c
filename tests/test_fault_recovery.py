"""Faults that used to leave a wrong result or a workspace no rerun repaired, each tried on a fresh
tiny project: a metadata CSV taken for the labels, a resume across a code change, two trainers in one
workspace, macOS and damaged archives, a damaged decode cache, and the messages that named the wrong
thing (an empty zip, a very large image, a relative path in a queued experiment)."""

from __future__ import annotations

import logging
import os
import shutil
import struct
import subprocess
import sys
import time
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from kagglecv import fold_training, resume
from kagglecv.data import CompetitionError
from kagglecv.ingest import check_image, read_competition
from kagglecv.params import DataParams, load_params
from kagglecv.paths import Paths
from kagglecv.runtime import WorkspaceBusy, workspace_lock
from kagglecv.sources import SourceError, fetch_local
from kagglecv.stages import download, split, train
from tests.conftest import REPO, SHIPPED, shipped
from tests.hardening_fixtures import (
    CLASSES, make_project, run_main, truncate, write_competition, write_params, write_png,
)  # fmt: skip
from tests.test_resume import interrupt_after

# --- 1. the labels CSV -------------------------------------------------------------------------------


def test_a_csv_of_image_sizes_over_the_training_ids_is_not_taken_for_the_labels(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    write_competition(raw)
    sizes = pd.DataFrame({"id": range(1, 13), "width": [28, 32] * 6, "height": [28, 32] * 6})
    sizes.to_csv(raw / "image_sizes.csv", index=False)  # sorts before trainLabels.csv, names the same ids
    competition = read_competition(raw, check_images=False)
    assert competition.labels_file == raw / "trainLabels.csv"
    assert competition.classes == sorted(CLASSES)


def test_the_sample_submissions_answer_column_tells_numeric_labels_from_numeric_metadata(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    write_competition(raw)
    pd.DataFrame({"id": range(1, 13), "has_cactus": [0, 1] * 6}).to_csv(raw / "trainLabels.csv", index=False)
    pd.DataFrame({"id": range(1, 5), "has_cactus": 0}).to_csv(raw / "sampleSubmission.csv", index=False)
    pd.DataFrame({"id": range(1, 13), "width": [28, 32] * 6}).to_csv(raw / "meta.csv", index=False)
    competition = read_competition(raw, check_images=False)
    assert competition.labels_file == raw / "trainLabels.csv" and competition.classes == ["0", "1"]


def test_two_label_csvs_alike_stop_naming_both_and_data_labels_file_picks_one(tmp_path: Path) -> None:
    project = make_project(tmp_path)
    raw = project / "data/raw"
    relabelled = pd.read_csv(raw / "trainLabels.csv")
    relabelled["label"] = relabelled["label"].str.upper()
    relabelled.to_csv(raw / "labels_v2.csv", index=False)
    with pytest.raises(CompetitionError) as stopped:
        read_competition(raw, check_images=False)
    message = str(stopped.value)
    assert "labels_v2.csv" in message and "trainLabels.csv" in message and "data.labels_file" in message

    split.run(load_params(write_params(project, data={"labels_file": "labels_v2.csv"})), Paths(project))
    assert set(pd.read_csv(Paths(project).folds)["label"]) == {c.upper() for c in CLASSES}


def test_data_labels_file_that_is_not_there_lists_the_csvs(tmp_path: Path) -> None:
    write_competition(tmp_path / "raw")
    with pytest.raises(CompetitionError, match=r"data.labels_file: labels\.csv is not in .*trainLabels\.csv"):
        read_competition(tmp_path / "raw", labels_file="labels.csv", check_images=False)


# --- 2. resume across a code change ---------------------------------------------------------------------


def _reseeded(monkeypatch: pytest.MonkeyPatch) -> None:
    """The behaviour an edit of the epoch seeding in loaders.py gives: other shuffles, all else the same."""
    original = fold_training.train_batches
    monkeypatch.setattr(fold_training, "train_batches", lambda *a, seed, **k: original(*a, seed=seed + 1, **k))


def test_an_edit_of_the_code_trains_the_interrupted_fold_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    project = make_project(tmp_path / "a", epochs=3, patience=5)
    paths, params = Paths(project), load_params(project / "params.yaml")
    split.run(params, paths)
    with monkeypatch.context() as patch:
        interrupt_after(patch, fold=0, epochs=1)
        with pytest.raises(KeyboardInterrupt):
            train.run(params, paths)

    code = tmp_path / "code/kagglecv"  # the package as edited after the interruption
    shutil.copytree(REPO / "src/kagglecv", code, ignore=shutil.ignore_patterns("__pycache__"))
    (code / "loaders.py").write_text((code / "loaders.py").read_text() + "\n# epoch seeding changed\n")
    monkeypatch.setattr(resume, "PACKAGE_DIR", code, raising=False)
    _reseeded(monkeypatch)
    with caplog.at_level(logging.INFO, logger="kagglecv.train"):
        train.run(params, paths)

    clean = make_project(tmp_path / "b", epochs=3, patience=5)  # the edited code, never interrupted
    split.run(params, Paths(clean))
    train.run(params, Paths(clean))
    assert paths.oof.read_bytes() == Paths(clean).oof.read_bytes()
    changed = "fold 0: the code changed since the interrupted run (kagglecv/loaders.py); training the fold again"
    assert changed in caplog.text


def test_the_code_hashes_cover_exactly_the_train_stage_deps_in_dvc_yaml() -> None:
    deps = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]["train"]["deps"]
    assert {f"src/{name}" for name in resume.code_hashes()} == {d for d in deps if d.startswith("src/")}


# --- 3. one trainer per workspace ----------------------------------------------------------------------


def test_a_second_trainer_stops_naming_the_process_that_holds_the_workspace(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    project = make_project(tmp_path)
    lock = Paths(project).train_lock
    with workspace_lock(lock, "the train stage"):
        code, err = run_main(train, project, capsys)
    assert code == 1
    assert f"the train stage is already running in this workspace: pid {os.getpid()}" in err
    assert "Traceback" not in err
    assert not lock.exists() and not lock.parent.exists()  # released, and no folder left behind


def test_fold_runs_share_the_workspace_but_never_with_a_whole_stage(tmp_path: Path) -> None:
    lock = tmp_path / ".kagglecv/train.lock"
    with workspace_lock(lock, "train --folds 0", shared=True), workspace_lock(lock, "train --folds 1", shared=True):
        with pytest.raises(WorkspaceBusy, match=rf"pid {os.getpid()}, started .*; pid {os.getpid()}, started"):
            with workspace_lock(lock, "the train stage"):
                pass
    with workspace_lock(lock, "the train stage"), pytest.raises(WorkspaceBusy, match="already running"):
        with workspace_lock(lock, "train --folds 0", shared=True):
            pass
    assert not lock.parent.exists()


@pytest.mark.slow
def test_a_trainer_left_running_by_a_killed_dvc_blocks_a_second_until_it_ends(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    project = make_project(tmp_path, epochs=500, patience=500)
    split.run(load_params(project / "params.yaml"), Paths(project))
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    first = subprocess.Popen([sys.executable, "-m", "kagglecv.stages.train"], cwd=project, env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    lock = Paths(project).train_lock
    try:
        deadline = time.monotonic() + 120
        while not (lock.exists() and lock.read_text()) and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert first.poll() is None, "the first trainer ended before the test could start a second"
        code, err = run_main(train, project, capsys)
        assert code == 1 and f"pid {first.pid}" in err and f"'kill {first.pid}'" in err
    finally:
        first.kill()  # as one stops a stray trainer: the lock goes with it
        first.wait()
    with workspace_lock(lock, "the train stage"):
        pass


# --- 4. archives -----------------------------------------------------------------------------------------


def _zip_folder(folder: Path, archive: Path, extra: dict[str, bytes] | None = None, nested_train: bool = True) -> None:
    """`folder` as a Kaggle zip, train/ inside a nested train.zip; `extra` entries added as they are."""
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            name = path.relative_to(folder).as_posix()
            if not (nested_train and name.startswith("train/")):
                zf.write(path, name)
        if nested_train:
            inner = archive.with_name("train.zip")
            with zipfile.ZipFile(inner, "w") as train_zip:
                for path in sorted((folder / "train").iterdir()):
                    train_zip.write(path, f"train/{path.name}")
            zf.write(inner, "train.zip")
            inner.unlink()
        for name, data in (extra or {}).items():
            zf.writestr(name, data)


APPLE_DOUBLE = b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        " + bytes(50)  # a resource fork, no zip


def test_a_zip_made_on_macos_extracts_without_its_litter(tmp_path: Path) -> None:
    write_competition(tmp_path / "competition")
    archive = tmp_path / "competition.zip"
    litter = {"__MACOSX/._train.zip": APPLE_DOUBLE, "__MACOSX/._trainLabels.csv": APPLE_DOUBLE,
              "._sampleSubmission.csv": APPLE_DOUBLE, "test/.DS_Store": b"\x00\x00\x00\x01Bud1"}  # fmt: skip
    _zip_folder(tmp_path / "competition", archive, litter)
    fetch_local(archive, tmp_path / "raw")
    left = sorted(p.relative_to(tmp_path / "raw").as_posix() for p in (tmp_path / "raw").rglob("*"))
    assert not [p for p in left if "__MACOSX" in p or "/._" in f"/{p}" or p.endswith(".DS_Store")]
    competition = read_competition(tmp_path / "raw")
    assert len(competition.train_ids) == 12 and len(competition.test_ids) == 4 and not competition.problems


def _damaged_competition_zip(tmp_path: Path) -> Path:
    """A competition zip whose nested train.zip was cut short."""
    write_competition(tmp_path / "competition")
    inner = tmp_path / "inner"
    inner.mkdir()
    _zip_folder(tmp_path / "competition", inner / "whole.zip")
    with zipfile.ZipFile(inner / "whole.zip") as zf:
        train_zip = zf.read("train.zip")
    damaged = tmp_path / "damaged.zip"
    with zipfile.ZipFile(damaged, "w") as zf:
        for name in ("trainLabels.csv", "sampleSubmission.csv"):
            zf.write(tmp_path / "competition" / name, name)
        zf.writestr("train.zip", train_zip[: len(train_zip) // 2])
    return damaged


def test_a_truncated_nested_zip_is_named_with_its_path_and_what_to_do(tmp_path: Path) -> None:
    damaged = _damaged_competition_zip(tmp_path)
    with pytest.raises(SourceError) as stopped:
        fetch_local(damaged, tmp_path / "raw")
    message = str(stopped.value)
    assert message.startswith(f"train.zip (inside {damaged}): not a readable zip file")
    assert "download the competition again" in message and "data.path" in message


@pytest.mark.slow
def test_a_failed_download_under_dvc_repro_leaves_the_last_good_data_raw(tmp_path: Path) -> None:
    from tests.conftest import make_project as make_repository
    from tests.test_dvc_repro import sh
    from tests.test_hardening_dvc import dvc_fails

    write_competition(tmp_path / "competition")
    archive = tmp_path / "competition.zip"
    _zip_folder(tmp_path / "competition", archive)
    repository = make_repository(tmp_path / "project", {"data": {**yaml.safe_load(
        (REPO / "params.yaml").read_text())["data"], "source": "local", "path": str(archive)}})  # fmt: skip
    sh(repository, "dvc", "repro", "download")
    raw = repository / "data/raw"
    good = {p.relative_to(raw).as_posix(): p.read_bytes() for p in raw.rglob("*") if p.is_file()}
    assert "trainLabels.csv" in good and "train/1.png" in good

    shutil.copy(_damaged_competition_zip(tmp_path), archive)
    out = dvc_fails(repository, "repro", "--force", "download")
    assert f"train.zip (inside {archive}): not a readable zip file" in out
    assert {p.relative_to(raw).as_posix(): p.read_bytes() for p in raw.rglob("*") if p.is_file()} == good


# --- 5. a damaged decode cache ----------------------------------------------------------------------------


def test_cache_files_that_do_not_load_are_rebuilt_and_the_result_is_the_same(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    project = make_project(tmp_path)
    paths, params = Paths(project), load_params(project / "params.yaml")
    split.run(params, paths)
    train.run(params, paths)
    first = paths.oof.read_bytes()
    cache = project / "data/cache"
    damaged = sorted(cache.glob("images-*.npy")) + sorted(cache.glob("sizes-*.npy")) + sorted(cache.glob("checked-*"))
    assert len(damaged) >= 3
    for path in damaged:
        truncate(path)
    with caplog.at_level(logging.WARNING):
        train.run(params, paths)
    assert paths.oof.read_bytes() == first
    for path in damaged:
        assert f"{path} does not load" in caplog.text and path.exists()


# --- 6. the messages ----------------------------------------------------------------------------------


def test_an_empty_zip_is_named_not_a_temporary_folder(tmp_path: Path) -> None:
    empty = tmp_path / "competition.zip"
    with zipfile.ZipFile(empty, "w") as zf:
        zf.writestr("__MACOSX/._x", APPLE_DOUBLE)  # nothing but litter: empty too
    params = shipped(data=DataParams(source="local", path=str(empty)))
    with pytest.raises(SourceError, match=rf"data.path: {empty} holds no files \(an empty zip or folder\)"):
        download.run(params, Paths(tmp_path / "project"))

    with zipfile.ZipFile(empty, "w") as zf:
        zf.writestr("README.txt", "no competition here")
    with pytest.raises(CompetitionError) as stopped:
        download.run(params, Paths(tmp_path / "project"))
    assert str(stopped.value).startswith(f"data.path {empty}: no known competition layout found")
    assert not (tmp_path / "project/data").exists() or not any((tmp_path / "project/data").iterdir())


def write_large_png(path: Path, side: int) -> None:
    """A valid black 1-bit PNG of side x side pixels, written row block by row block (a small file)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    packer, row = zlib.compressobj(9), b"\x00" + bytes((side + 7) // 8)  # filter byte, then the packed bits
    body = b"".join(packer.compress(row * 1000) for _ in range(side // 1000)) + packer.compress(row * (side % 1000))
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body + packer.flush())
                     + chunk(b"IEND", b""))  # fmt: skip


def test_a_valid_182_megapixel_image_is_used_and_the_limit_is_a_setting(tmp_path: Path) -> None:
    project = make_project(tmp_path)
    large = project / "data/raw/train/13.png"
    write_large_png(large, 13_500)  # 182.25 megapixels: above Pillow's own limit of 2 x 89.5
    labels = pd.read_csv(project / "data/raw/trainLabels.csv")
    pd.concat([labels, pd.DataFrame({"id": [13], "label": ["cat"]})]).to_csv(
        project / "data/raw/trainLabels.csv", index=False)  # fmt: skip
    split.run(load_params(project / "params.yaml"), Paths(project))
    assert "13" in pd.read_csv(Paths(project).folds, dtype=str)["id"].tolist()
    assert pd.read_csv(Paths(project).ingest_report).empty
    assert SHIPPED.data.max_megapixels >= 182.25

    verdict = check_image(large, max_pixels=100_000_000)
    assert verdict == "13500x13500 is 182.2 megapixels, above data.max_megapixels 100; raise it to use this image"


def test_a_relative_data_path_that_is_missing_says_queued_experiments_run_in_a_copy(tmp_path: Path) -> None:
    params = shipped(data=DataParams(source="local", path="downloads/competition.zip"))
    with pytest.raises(SourceError) as stopped:
        download.run(params, Paths(tmp_path))
    message = str(stopped.value)
    assert message.startswith("data.path: downloads/competition.zip does not exist")
    assert "queued" in message and "copy of the workspace" in message and "absolute path" in message


def test_an_image_too_large_to_read_from_a_small_file_is_refused_before_decoding(tmp_path: Path) -> None:
    write_png(tmp_path / "small.png", 0, np.random.default_rng(0))  # 12 x 12
    assert check_image(tmp_path / "small.png", max_pixels=144) is None
    assert "above data.max_megapixels 0.0001" in check_image(tmp_path / "small.png", max_pixels=100)
