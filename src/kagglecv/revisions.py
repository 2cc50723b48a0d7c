"""Files of the pipeline as another revision left them, read through DVC's API (no retraining).

A revision is anything DVC resolves: an experiment name from `dvc exp show`, a branch, a tag, a
commit, or `workspace` for the files on disk. DVC-tracked files come from its cache for that
revision; git-tracked ones from the commit.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

WORKSPACE = "workspace"


class RevisionError(ValueError):
    """A revision or one of its files cannot be read; the message names both."""


def resolve_revision(root: Path, rev: str) -> str:
    """The commit `rev` names (an experiment's too), or `workspace`."""
    if rev == WORKSPACE:
        return rev
    from dvc.exceptions import DvcException
    from dvc.repo import Repo
    from dvc.scm import resolve_rev

    try:
        with Repo(str(root)) as repo:
            return resolve_rev(repo.scm, rev)
    except DvcException as err:
        raise RevisionError(
            f"{rev!r} is no revision of {root.resolve()}: name an experiment from 'dvc exp show', a branch, a tag, "
            f"a commit or 'workspace' ({err})"
        ) from None


def read_csv_at(root: Path, rev: str, path: str, **kwargs) -> pd.DataFrame:
    """`path` (relative to the repository `root`) as revision `rev` has it, read by pandas."""
    if rev == WORKSPACE:
        if not (root / path).exists():
            raise RevisionError(f"workspace: {path} missing: run 'dvc repro' first")
        return pd.read_csv(root / path, **kwargs)
    import dvc.api
    from dvc.exceptions import DvcException

    commit = resolve_revision(root, rev)
    try:
        with dvc.api.open(path, repo=str(root), rev=commit) as f:
            return pd.read_csv(f, **kwargs)
    except (FileNotFoundError, DvcException) as err:
        raise RevisionError(
            f"{rev}: cannot read {path} ({type(err).__name__}: {err}); the experiment must have run its 'train' "
            "and 'predict' stages, and its outputs must be in the DVC cache ('dvc pull' if they are in a remote)"
        ) from None
