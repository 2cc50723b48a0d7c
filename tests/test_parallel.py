"""Folds in parallel (kagglecv.parallel): the same files whatever schedules the folds, and a failed
or killed worker fails the stage naming its fold while the finished folds stay for the rerun."""

from __future__ import annotations

import dataclasses
import functools
import multiprocessing
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
import torch
import yaml

from kagglecv import parallel
from kagglecv.params import ParallelParams, ParamsError, load_params
from kagglecv.paths import Paths
from kagglecv.resume import ResumeStore
from kagglecv.stages import split, train
from tests.conftest import REPO, shipped, with_raw

# kcv_cnn has dropout and the shift augmentation draws from the generators: a schedule that
# leaked one fold's random state into another would show in the files.
PARAMS = shipped(n_folds=3, epochs=2, img_size=8, batch_size=32, patience=5, warmup_epochs=0)


def outputs(paths: Paths) -> dict[str, bytes]:
    """Every file the train stage's result is judged by: out-of-fold probabilities and models."""
    return {p.name: p.read_bytes() for p in [paths.oof, *sorted(paths.models.glob("fold*.pt"))]}


def trained(raw: Path, root: Path, par: ParallelParams, params=PARAMS) -> Paths:
    paths = with_raw(Paths(root), raw)
    params = dataclasses.replace(params, parallel=par)
    split.run(params, paths)
    train.run(params, paths)
    return paths


@pytest.fixture(scope="module")
def sequential(digits_raw, tmp_path_factory) -> Paths:
    """Folds one after another, one torch thread each: the reference every schedule must match."""
    return trained(digits_raw, tmp_path_factory.mktemp("sequential"), ParallelParams(threads=1))


def test_fold_threads_share_the_cores_unless_set():
    assert parallel.fold_threads(ParallelParams(), cores=8) == 0  # one fold at a time: torch's default
    assert parallel.fold_threads(ParallelParams(folds=2), cores=8) == 4
    assert parallel.fold_threads(ParallelParams(folds=3), cores=2) == 1  # never below one
    assert parallel.fold_threads(ParallelParams(folds=2, threads=3), cores=8) == 3


def test_the_schedule_is_in_neither_the_resume_key_nor_the_checkpoint():
    a = parallel.trained_params(PARAMS)
    b = parallel.trained_params(dataclasses.replace(PARAMS, parallel=ParallelParams(folds=4, backend="ray")))
    assert a == b and "parallel" not in a and a["lr"] == PARAMS.lr


def test_parallel_folds_with_devices_is_refused(tmp_path):
    path = tmp_path / "params.yaml"
    text = (REPO / "params.yaml").read_text()
    path.write_text(text.replace("devices: 1 ", "devices: 2 ").replace("folds: 1 ", "folds: 2 "))
    with pytest.raises(ParamsError, match=r"parallel.folds: 2 trains each fold in one process; set devices: 1"):
        load_params(path)


@pytest.mark.slow
def test_two_local_workers_give_the_files_of_sequential_folds(sequential, digits_raw, tmp_path, caplog):
    with caplog.at_level("INFO", logger="kagglecv.train"):
        paths = trained(digits_raw, tmp_path, ParallelParams(folds=2, threads=1))
    assert "training folds [0, 1, 2] on 2 local worker(s), 1 thread(s) each" in caplog.text
    assert outputs(paths) == outputs(sequential)
    for fold in range(3):  # the stage, not the workers, logs every fold's curves
        assert len((paths.live / f"fold{fold}/plots/metrics/valid/loss.tsv").read_text().splitlines()) == 1 + 2
    assert not paths.resume.exists()


def failing_task(fold: int) -> dict:
    """A worker's task: fold 1 raises, the others finish."""
    if fold == 1:
        raise ValueError("no images for fold 1")
    return {"finished": True, "fold": fold}


@pytest.mark.slow
def test_a_worker_error_fails_the_stage_naming_its_fold_and_keeps_the_finished_ones(tmp_path):
    store = ResumeStore("key", tmp_path)
    task = functools.partial(failing_task)
    with pytest.raises(parallel.WorkerError) as err:
        parallel.train_folds(task, range(3), ParallelParams(folds=3, threads=1), store)  # all at once: no race
    message = str(err.value)
    assert "1 fold(s) failed in their workers; folds [0, 2] finished and are kept for the rerun" in message
    assert "fold 1: ValueError: no images for fold 1" in message
    assert 'in failing_task' in message  # the worker's traceback
    assert store.read(0) == {"finished": True, "fold": 0} and store.read(1) is None


def kill_worker_mid_fold(store_root: Path, fold: int, killed: list[int]) -> None:
    """SIGKILL the worker training `fold` (handed out first to worker `fold`) once it saved an epoch."""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if any(p.exists() for p in store_root.glob(f"*/fold{fold}.pt")):
            for child in multiprocessing.active_children():
                if child.name == f"kagglecv-fold-worker-{fold}":
                    os.kill(child.pid, signal.SIGKILL)
                    killed.append(child.pid)
                    return
        time.sleep(0.05)


@pytest.mark.slow
def test_a_killed_worker_fails_the_stage_and_the_rerun_resumes_to_the_same_files(sequential, digits_raw, tmp_path):
    params = dataclasses.replace(PARAMS, parallel=ParallelParams(folds=2, threads=1))
    paths = with_raw(Paths(tmp_path), digits_raw)
    split.run(params, paths)
    killed: list[int] = []
    killer = threading.Thread(target=kill_worker_mid_fold, args=(paths.resume, 0, killed), daemon=True)
    killer.start()
    with pytest.raises(parallel.WorkerError, match=r"fold 0: its worker process died \(killed by SIGKILL\)"):
        train.run(params, paths)
    killer.join()
    assert killed
    (store,) = paths.resume.iterdir()
    assert not torch.load(store / "fold0.pt", weights_only=False)["finished"]  # its last epoch, kept
    assert torch.load(store / "fold1.pt", weights_only=False)["finished"]  # the other worker's fold, kept
    assert not paths.oof.exists()

    train.run(params, paths)
    assert outputs(paths) == outputs(sequential)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_a_local_ray_cluster_gives_the_files_of_sequential_folds(sequential, digits_raw, tmp_path, monkeypatch):
    port = free_port()
    temp = tempfile.mkdtemp(prefix="ray")  # Ray's socket paths must stay short
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")  # head and driver alike, whatever token ~/.ray holds
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(REPO)]), "RAY_USAGE_STATS_ENABLED": "0"}
    ray_bin = Path(sys.executable).with_name("ray")
    head = subprocess.Popen(
        [str(ray_bin), "start", "--head", "--block", "--node-ip-address=127.0.0.1", f"--port={port}", "--num-cpus=2",
         "--num-gpus=0", "--include-dashboard=false", f"--temp-dir={temp}", "--disable-usage-stats"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        par = ParallelParams(folds=2, backend="ray", address=f"127.0.0.1:{port}", threads=1)
        paths = _train_when_up(digits_raw, tmp_path, par)
        assert outputs(paths) == outputs(sequential)
    finally:
        head.send_signal(signal.SIGTERM)  # --block: the head stops the processes it started
        head.wait(timeout=120)


def _train_when_up(raw: Path, root: Path, par: ParallelParams) -> Paths:
    deadline = time.monotonic() + 180
    while True:
        try:
            return trained(raw, root, par)
        except parallel.WorkerError as err:
            if "no Ray cluster there" not in str(err) or time.monotonic() > deadline:
                raise
            for leftover in (root / "data", root / ".kagglecv"):
                if leftover.exists():
                    subprocess.run(["rm", "-rf", str(leftover)], check=True)
            time.sleep(2)


@pytest.mark.slow
def test_ray_is_not_imported_unless_asked_for():
    code = "import kagglecv.stages.train, kagglecv.parallel, sys; print('ray' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                          env={**os.environ, "PYTHONPATH": str(REPO / "src")})  # fmt: skip
    assert done.stdout.strip() == "False"


@pytest.mark.slow
def test_an_unreachable_ray_address_is_named():
    par = ParallelParams(folds=2, backend="ray", address=f"127.0.0.1:{free_port()}", threads=1)
    with pytest.raises(parallel.WorkerError, match=re.escape(f"parallel.address: '{par.address}': no Ray cluster")):
        parallel.run_ray(functools.partial(failing_task), [0], par, 1, deliver=lambda *a: None)


@pytest.mark.slow
def test_the_stage_run_as_dvc_runs_it_gives_the_same_files(sequential, digits_raw, tmp_path):
    """`python -m kagglecv.stages.train`: the workers find the stage's functions though it runs as __main__."""
    (tmp_path / "data").mkdir()
    os.symlink(digits_raw, tmp_path / "data" / "raw")
    split.run(PARAMS, Paths(tmp_path))
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params.update(n_folds=3, epochs=2, img_size=8, batch_size=32, patience=5, warmup_epochs=0,
                  parallel={"folds": 2, "backend": "local", "address": "auto", "threads": 1})  # fmt: skip
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))  # checkpoints keep the key order
    done = subprocess.run([sys.executable, "-m", "kagglecv.stages.train"], cwd=tmp_path, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO / "src")}, timeout=900)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "on 2 local worker(s), 1 thread(s) each" in done.stderr
    assert outputs(Paths(tmp_path)) == outputs(sequential)


def test_the_benchmark_table_says_which_settings_gave_the_reference_files():
    from kagglecv.bench_parallel import format_table

    same, other = {"predictions/oof.csv": "a"}, {"predictions/oof.csv": "b"}
    result = {
        "median_seconds": {"sequential": 30.0, "sequential, 1 thread": 40.0, "2 local workers": 20.0},
        "seconds": {"sequential": [30.0], "sequential, 1 thread": [40.0], "2 local workers": [20.0]},
        "speedup_vs_sequential": {"sequential": 1.0, "sequential, 1 thread": 0.75, "2 local workers": 1.5},
        "hashes": {"sequential": other, "sequential, 1 thread": same, "2 local workers": same},
    }  # fmt: skip
    rows = format_table(result).splitlines()[2:]
    assert rows == [
        "| sequential | 30.0 | 30.0 | 1.00x | no |",
        "| sequential, 1 thread | 40.0 | 40.0 | 0.75x | yes |",
        "| 2 local workers | 20.0 | 20.0 | 1.50x | yes |",
    ]
