"""Resuming an interrupted train stage: per-fold state kept outside DVC's outputs.

DVC deletes a stage's outputs before running it, so the state lives in the git-ignored
`.kagglecv/resume/<key>/fold<k>.pt`, where `<key>` hashes the params and the data it was trained
on: a change that affects training gets a new key and starts fresh instead of continuing
another experiment. Each file holds either the latest epoch's snapshot of an unfinished fold or
the results of a finished one, with the hashes of the code that made it (every project module the
train stage imports, `code_hashes`): after an edit of one of them the fold trains again, as a clean
run of the new code would, and the log names the files that changed. The stage deletes the folder
once it completes.
"""

from __future__ import annotations

import ast
import hashlib
import json
import logging
import random
import shutil
from pathlib import Path

import numpy as np
import torch

from kagglecv.artifacts import write_checkpoint
from kagglecv.memory import read_blocks

log = logging.getLogger("kagglecv.train")

PACKAGE_DIR = Path(__file__).resolve().parent  # src/kagglecv: where `code_hashes` reads the modules


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
        for _, block in read_blocks(array, step):
            digest.update(np.ascontiguousarray(block).data)
    for path in files:
        digest.update(Path(path).read_bytes())
    return digest.hexdigest()[:16]


def _module_file(name: str) -> Path | None:
    """The file of project module `name` (kagglecv.x.y); None for anything outside the project."""
    if name != PACKAGE_DIR.name and not name.startswith(PACKAGE_DIR.name + "."):
        return None
    base = PACKAGE_DIR.parent.joinpath(*name.split("."))
    return next((p for p in (base.with_suffix(".py"), base / "__init__.py") if p.is_file()), None)


def code_hashes(module: str = "kagglecv.stages.train") -> dict[str, str]:
    """kagglecv/<file>.py -> sha256 (16 hex digits) of `module` and of every project module it imports,
    directly or not, read statically (imports inside functions count) so every process agrees."""
    hashes: dict[str, str] = {}
    todo = [module]
    while todo:
        parts = todo.pop().split(".")
        for k in range(1, len(parts) + 1):  # importing a.b.c runs a/__init__.py and a/b/__init__.py too
            path = _module_file(".".join(parts[:k]))
            name = path.relative_to(PACKAGE_DIR.parent).as_posix() if path else None
            if path is None or name in hashes:
                continue
            source = path.read_bytes()
            hashes[name] = hashlib.sha256(source).hexdigest()[:16]
            for node in ast.walk(ast.parse(source)):
                if isinstance(node, ast.Import):
                    todo += [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                    todo += [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
    return dict(sorted(hashes.items()))


class ResumeStore:
    """`<root>/<key>/fold<k>.pt`: one file per fold (`fold<k>-<r>.pt` for its r-th extra seed), replaced
    atomically. With `code` (`code_hashes`), a fold's state made by other code is not read back (the log
    says which files differ)."""

    def __init__(self, key: str, root: Path, code: dict[str, str] | None = None) -> None:
        self.dir = Path(root) / key
        self.code = code

    def path(self, fold: int, run: int = 0) -> Path:
        return self.dir / (f"fold{fold}.pt" if run == 0 else f"fold{fold}-{run}.pt")

    def read(self, fold: int, run: int = 0) -> dict | None:
        path = self.path(fold, run)
        if not path.exists():
            return None
        state = torch.load(path, map_location="cpu", weights_only=False)
        made_by = state.get("code")
        if self.code is not None and made_by != self.code:
            made_by = made_by or {}
            changed = sorted(f for f in {*made_by, *self.code} if made_by.get(f) != self.code.get(f))
            shown = ", ".join(changed[:5]) + (f" and {len(changed) - 5} more" if len(changed) > 5 else "")
            log.info("fold %d: the code changed since the interrupted run (%s); training the fold again", fold, shown)
            return None
        return state

    def write(self, fold: int, state: dict, run: int = 0) -> None:
        write_checkpoint(self.path(fold, run), state if self.code is None else {**state, "code": self.code})

    def clear(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)
        root = self.dir.parent
        for folder in (root, root.parent) if root.parent.name == ".kagglecv" else (root,):
            if folder.is_dir() and not any(folder.iterdir()):  # leave no empty folders behind
                folder.rmdir()
