"""Folds in parallel: workers (local processes or Ray tasks) train folds; the train stage gathers them.

A k-fold run is k independent trainings. With `parallel.folds` > 1 the train stage hands the folds
it still has to train to up to that many workers: local processes (`backend: local`), each pinned
to its own GPU when there are GPUs and otherwise given an even share of the cores, or Ray tasks on
the cluster at `parallel.address` (`backend: ray`), each asking for one GPU when the cluster has
any. A worker trains its fold into its machine's resume store (so a killed one resumes after its
last epoch) and returns the finished fold; the stage writes it into its own store and then goes
through every fold as a sequential run does, finding each one finished. So only the stage writes
DVC outputs and dvclive logs, and a fold finished before an interruption is not trained again.

CPU results depend on the number of torch threads (1 and 2 threads give different out-of-fold
probabilities), so each fold trains with `parallel.threads` threads, 0 meaning the stage's cores
divided among the folds at once: runs with the same threads per fold give identical files, one
fold at a time, several, or through Ray.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import logging
import multiprocessing
import os
import signal
import socket
import sys
import time
import traceback
from collections.abc import Callable, Iterable
from multiprocessing.connection import Connection, wait

import torch

from kagglecv.params import ParallelParams, Params
from kagglecv.resume import ResumeStore
from kagglecv.runtime import bound_heap, setup_logging

log = logging.getLogger("kagglecv.train")

Task = Callable[[int], dict]  # fold -> its finished state (the resume store's file); picklable


class WorkerError(RuntimeError):
    """A fold's worker raised or died, or the workers could not be started."""


def trained_params(params: Params) -> dict:
    """`params` as a dict without `parallel`: how the folds were scheduled changes neither the resume
    key nor the checkpoints (the threads per fold are the caller's to keep equal)."""
    return {k: v for k, v in dataclasses.asdict(params).items() if k != "parallel"}


def fold_threads(parallel: ParallelParams, cores: int | None = None) -> int:
    """Torch threads per fold: `parallel.threads`, else the cores divided among the folds at once
    (0 for one fold at a time: torch's own default)."""
    if parallel.threads or parallel.folds == 1:
        return parallel.threads
    return max(1, (cores or torch.get_num_threads()) // parallel.folds)


def use_threads(threads: int) -> None:
    if threads:
        torch.set_num_threads(threads)


def train_folds(task: Task, folds: Iterable[int], parallel: ParallelParams, store: ResumeStore) -> None:
    """Train the `folds` not finished in `store` on up to `parallel.folds` workers and write each
    finished fold into `store`; nothing to do for `parallel.folds` 1 (the caller's loop trains them)."""
    if parallel.folds == 1:
        return
    todo = [f for f in folds if not (store.read(f) or {}).get("finished")]
    if not todo:
        return
    threads, started = fold_threads(parallel), time.perf_counter()
    log.info("training folds %s on %d %s worker(s), %d thread(s) each", todo, min(parallel.folds, len(todo)),
             parallel.backend, threads)  # fmt: skip
    run = run_ray if parallel.backend == "ray" else run_local
    finished, failures = run(importable(task), todo, parallel, threads, deliver=store.write)
    if failures:
        kept = f"; folds {finished} finished and are kept for the rerun" if finished else ""
        raise WorkerError(f"{len(failures)} fold(s) failed in their workers{kept}:\n" + "\n".join(failures))
    log.info("folds %s trained by the workers in %.1f s", todo, time.perf_counter() - started)


def importable(task: functools.partial) -> functools.partial:
    """`task` with its function taken from its module by name: under `python -m kagglecv.stages.train`
    it lives in `__main__`, which workers (and Ray's pickler) cannot import by that name."""
    main = sys.modules["__main__"]
    if task.func.__module__ != "__main__" or getattr(main, "__spec__", None) is None:
        return task
    func = getattr(importlib.import_module(main.__spec__.name), task.func.__name__)
    return functools.partial(func, *task.args, **task.keywords)


def run_local(
    task: Task, folds: list[int], parallel: ParallelParams, threads: int, *, deliver: Callable[[int, dict], None]
) -> tuple[list[int], list[str]]:
    """Up to `parallel.folds` worker processes, each pinned to one GPU when there are GPUs; a fold
    at a time to whichever is free. After a failure no new fold starts; the running ones finish.
    Returns the folds finished and one line per failure."""
    # Forks of one fresh interpreter that imported the task's modules: no torch threads or CUDA state
    # inherited from the stage, and one import of torch and the stage (seconds) for all the workers.
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([task.func.__module__])
    gpus = torch.cuda.device_count()
    workers: dict[Connection, multiprocessing.Process] = {}
    for slot in range(min(parallel.folds, len(folds))):
        ours, theirs = context.Pipe()
        gpu = slot % gpus if gpus else None
        process = context.Process(target=serve, args=(task, theirs, threads, gpu), name=f"kagglecv-fold-worker-{slot}")
        process.start()
        theirs.close()
        workers[ours] = process
    queue, running, finished, failures = list(folds), {}, [], []
    try:
        for conn in workers:
            _hand_out(conn, queue, running)
        while running:
            ready = wait([*running, *(workers[c].sentinel for c in running)])
            for conn in [c for c in running if c in ready or workers[c].sentinel in ready]:
                fold = running.pop(conn)
                outcome = _receive(conn, workers[conn])
                if isinstance(outcome, dict):
                    deliver(fold, outcome)
                    finished.append(fold)
                    _hand_out(conn, queue if not failures else [], running)
                else:
                    failures.append(f"  - fold {fold}: {outcome}")
    finally:
        _stop(workers)
    return sorted(finished), failures


def _hand_out(conn: Connection, queue: list[int], running: dict[Connection, int]) -> None:
    if queue:
        running[conn] = queue.pop(0)
        conn.send(running[conn])


def _receive(conn: Connection, process: multiprocessing.Process) -> dict | str:
    """The fold's state, or what went wrong: the worker's error, or how its process ended."""
    try:
        if conn.poll():
            kind, payload = conn.recv()
            return payload if kind == "done" else payload.strip().splitlines()[-1] + "\n" + _indent(payload)
    except (EOFError, OSError):
        pass
    process.join(timeout=10)
    code = process.exitcode
    how = f"killed by {signal.Signals(-code).name}" if code is not None and code < 0 else f"exit status {code}"
    return f"its worker process died ({how}); its last finished epoch is kept for the rerun"


def _indent(text: str) -> str:
    return "\n".join("      " + line for line in text.strip().splitlines())


def _stop(workers: dict[Connection, multiprocessing.Process]) -> None:
    for conn, process in workers.items():
        if process.is_alive():
            try:
                conn.send(None)
            except (BrokenPipeError, OSError):
                pass
    for process in workers.values():
        process.join(timeout=30)
        if process.is_alive():
            process.terminate()
            process.join()


def serve(task: Task, conn: Connection, threads: int, gpu: int | None) -> None:
    """A local worker: train each fold sent until None comes; answer ("done", state) or ("error", traceback)."""
    if gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(gpu)  # before CUDA starts in this process
    setup_logging()
    bound_heap()
    use_threads(threads)
    while (fold := conn.recv()) is not None:
        try:
            conn.send(("done", task(fold)))
        except Exception:  # noqa: BLE001 - sent to the stage, which fails naming the fold
            conn.send(("error", traceback.format_exc()))


def run_ray(
    task: Task, folds: list[int], parallel: ParallelParams, threads: int, *, deliver: Callable[[int, dict], None]
) -> tuple[list[int], list[str]]:
    """Ray tasks on the cluster at `parallel.address`, at most `parallel.folds` at once, one GPU each
    when the cluster has GPUs; a killed task is not retried (the stage fails naming its fold)."""
    try:
        import ray
    except ImportError as err:
        raise WorkerError("parallel.backend: ray needs Ray: pip install -e '.[ray]'") from err
    try:
        check_reachable(parallel.address)
        ray.init(address=None if parallel.address == "local" else parallel.address, log_to_driver=True)
    except (OSError, RuntimeError, ValueError) as err:
        raise WorkerError(f"parallel.address: {parallel.address!r}: no Ray cluster there ({err}); start one with "
                          "'ray start --head', or set parallel.address: local") from err  # fmt: skip
    try:
        gpu = 1 if ray.cluster_resources().get("GPU", 0) else 0
        remote = ray.remote(ray_task).options(num_cpus=max(threads, 1), num_gpus=gpu, max_retries=0)
        queue, pending, finished, failures = list(folds), {}, [], []
        while queue or pending:
            while queue and not failures and len(pending) < parallel.folds:
                fold = queue.pop(0)
                pending[remote.remote(task, fold, threads)] = fold
            if not pending:
                break
            (ref,), _ = ray.wait(list(pending), num_returns=1)
            fold = pending.pop(ref)
            try:
                deliver(fold, ray.get(ref))
                finished.append(fold)
            except ray.exceptions.RayError as err:
                failures.append(f"  - fold {fold}: {type(err).__name__}: {err}")
        return sorted(finished), failures
    finally:
        ray.shutdown()


def check_reachable(address: str) -> None:
    """Raise `OSError` at once when `host:port` (or `ray://host:port`) takes no connection: Ray itself
    retries for minutes before it gives up."""
    if address in ("auto", "local"):
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    socket.create_connection((host, int(port)), timeout=10).close()


def ray_task(task: Task, fold: int, threads: int) -> dict:
    """One fold in a Ray worker (Ray sets CUDA_VISIBLE_DEVICES to the GPU it grants)."""
    setup_logging()
    use_threads(threads)
    return task(fold)
