"""Resuming an interrupted train stage: per-fold state kept outside DVC's outputs.

DVC deletes a stage's outputs before running it, so the state lives in the git-ignored
`.kagglecv/resume/<key>/fold<k>.pt`, where `<key>` hashes the params and the data it was trained
on: a change that affects training gets a new key and starts fresh instead of continuing
another experiment. Each file holds either the latest epoch's snapshot of an unfinished fold or
the results of a finished one. The stage deletes the folder once it completes.
"""

from __future__ import annotations

import hashlib
import json
import random
import shutil
from pathlib import Path

import numpy as np
import torch

from kagglecv.artifacts import write_checkpoint


def read_rng_state() -> dict:
    """Python's, NumPy's and torch's global generators (CUDA's too when present)."""
    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }


def write_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if state["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def resume_key(params: dict, *arrays: np.ndarray, files: tuple[Path, ...] = ()) -> str:
    """A short hash of the training params, the data arrays and the files' bytes."""
    digest = hashlib.sha256(json.dumps(params, sort_keys=True, default=str).encode())
    for array in arrays:
        digest.update(str((array.shape, array.dtype)).encode())
        step = max(1, (64 << 20) // max(1, array[:1].nbytes))  # 64 MB at a time: a memory-mapped set is never copied whole
        for start in range(0, len(array), step):
            digest.update(np.ascontiguousarray(array[start : start + step]).data)
    for path in files:
        digest.update(Path(path).read_bytes())
    return digest.hexdigest()[:16]


class ResumeStore:
    """`<root>/<key>/fold<k>.pt`: one file per fold (`fold<k>-<r>.pt` for its r-th extra seed), replaced atomically."""

    def __init__(self, key: str, root: Path) -> None:
        self.dir = Path(root) / key

    def path(self, fold: int, run: int = 0) -> Path:
        return self.dir / (f"fold{fold}.pt" if run == 0 else f"fold{fold}-{run}.pt")

    def read(self, fold: int, run: int = 0) -> dict | None:
        path = self.path(fold, run)
        return torch.load(path, map_location="cpu", weights_only=False) if path.exists() else None

    def write(self, fold: int, state: dict, run: int = 0) -> None:
        write_checkpoint(self.path(fold, run), state)

    def clear(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)
        root = self.dir.parent
        for folder in (root, root.parent) if root.parent.name == ".kagglecv" else (root,):
            if folder.is_dir() and not any(folder.iterdir()):  # leave no empty folders behind
                folder.rmdir()
