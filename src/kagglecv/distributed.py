"""Data-parallel training on several devices with PyTorch's own launcher and DistributedDataParallel.

With `devices` > 1 (or `auto` on a multi-GPU machine) the train stage relaunches itself through
`torch.distributed.run` (torchrun): one process per device, NCCL between GPUs, Gloo on the CPU.
Every process trains on its share of each global batch (`batch_size` / processes images) and
DDP averages the gradients, so the updates are those of one process on the whole batch. Every
process scores the whole validation fold; only the first writes files.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Callable

import torch
import torch.distributed as dist


class DevicesError(ValueError):
    """`devices` asks for something this machine or batch size cannot do."""


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def is_main() -> bool:
    return rank() == 0


def count_devices(devices: int | str) -> int:
    """`devices` from params as a process count; auto: every GPU, or one process on the CPU."""
    return max(torch.cuda.device_count(), 1) if devices == "auto" else int(devices)


def device_for(devices: int | str) -> str | None:
    """This process's device: its own GPU under torchrun; None lets `select_precision` choose."""
    if not dist.is_initialized():
        return None
    if torch.cuda.is_available():
        local = int(os.environ.get("LOCAL_RANK", 0))
        torch.cuda.set_device(local)
        return f"cuda:{local}"
    return "cpu"


def device_type(devices: int | str) -> str:
    """"cuda" or "cpu": the kind of device this process trains on (as `select_precision` picks it)."""
    device = device_for(devices)
    return torch.device(device).type if device else ("cuda" if torch.cuda.is_available() else "cpu")


def under_torchrun() -> bool:
    """Whether this process is one of those torchrun started (it sets their rank and count)."""
    return "LOCAL_RANK" in os.environ and "WORLD_SIZE" in os.environ


def launch_or_run(run: Callable[[], object], devices: int | str, module: str = "kagglecv.stages.train") -> None:
    """Run `run` here when one process is asked for (or we are one of torchrun's); else relaunch `module`."""
    n = count_devices(devices)
    if under_torchrun():
        dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
        if not is_main():
            logging.getLogger("kagglecv").setLevel(logging.WARNING)  # one log, the first process's
        try:
            run()
        finally:
            dist.destroy_process_group()
        return
    if n <= 1:
        run()
        return
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={n}", "-m", module,
               *sys.argv[1:]]  # fmt: skip
    code = subprocess.call(command)
    if code:
        raise SystemExit(code)


def wrap(trainer) -> None:
    """Wrap `trainer.model` in DistributedDataParallel and sum its metrics over processes."""
    if world_size() <= 1:
        return
    device = trainer.precision.device
    trainer.model = torch.nn.parallel.DistributedDataParallel(
        trainer.model, device_ids=[device.index] if device.type == "cuda" else None
    )

    def all_reduce(t: torch.Tensor) -> torch.Tensor:
        t = t.clone()
        dist.all_reduce(t)
        return t

    trainer.all_reduce = all_reduce


def max_over_processes(value: float) -> float:
    """The largest of every process's `value`, so that all of them take the same decision from it."""
    if not dist.is_initialized():
        return value
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return float(t.item())


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()
