"""Keys of the caches in data/cache/: what a set of image files holds, wherever the files lie.

A key comes from the files' bytes (blake2b, in the given order), not from their paths or times, so a
copy of the competition elsewhere finds what was decoded and checked before: a queued experiment runs
in a fresh copy of the workspace under `.dvc/tmp/exps/`, with every file of data/raw checked out anew
(`shared_cache_dir` points it at the workspace's own cache). Reading every file to hash it costs about
a second per 600 MB in the page cache (far less than decoding them), and is done once per set: the
content key is remembered under the files' paths, sizes and modification times, so an unchanged set is
only `stat()`ed.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from kagglecv.artifacts import atomic_path
from kagglecv.progress import Progress

log = logging.getLogger(__name__)

QUEUED_RUNS = (".dvc", "tmp", "exps")  # where DVC copies the workspace for `dvc exp run --queue` / `--temp`
_KEY = re.compile(r"[0-9a-f]{32}")


def shared_cache_dir(cache_dir: Path) -> Path:
    """`cache_dir`, or, when it lies in a queued experiment's copy of a workspace
    (`<workspace>/.dvc/tmp/exps/<run>/data/cache`), the workspace's own (`<workspace>/data/cache`)."""
    parts = cache_dir.resolve().parts
    for i in range(len(parts) - len(QUEUED_RUNS) - 1):
        if parts[i : i + len(QUEUED_RUNS)] == QUEUED_RUNS:
            return Path(*parts[:i], *parts[i + len(QUEUED_RUNS) + 1 :])
    return cache_dir


def _stat_line(path: Path) -> str:
    try:
        stat = path.stat()
    except FileNotFoundError:
        return f"\n{path.resolve()} missing"
    return f"\n{path.resolve()} {stat.st_size} {stat.st_mtime_ns}"


def _file_digest(path: Path) -> str:
    try:
        with open(path, "rb") as f:
            return hashlib.file_digest(f, "blake2b").hexdigest()[:32]
    except (FileNotFoundError, IsADirectoryError):
        return "missing"


def content_digest(paths: Sequence[Path]) -> str:
    """A digest of the bytes of `paths` in order (a missing file counts as such); read with every core."""
    digest = hashlib.blake2b(digest_size=16)
    with (
        ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool,  # reads and hashing release the GIL
        Progress(len(paths), f"fingerprinting {len(paths)} files", unit="file", log=log) as progress,
    ):
        for line in pool.map(_file_digest, paths, chunksize=64):
            digest.update(f"{line}\n".encode())
            progress.update()
    return digest.hexdigest()


def content_key(paths: Sequence[Path], cache_dir: Path | None) -> str:
    """The digest of the bytes of `paths` (32 hex), remembered in `cache_dir` under their paths, sizes and
    modification times, so an unchanged set is only `stat()`ed."""
    stat_key = hashlib.sha1("".join(_stat_line(path) for path in paths).encode()).hexdigest()[:16]
    memo = cache_dir / f"files-{stat_key}.txt" if cache_dir is not None else None
    found = memo.read_text().strip() if memo is not None and memo.is_file() else ""
    content = found if _KEY.fullmatch(found) else content_digest(paths)
    if memo is not None and content != found:
        with atomic_path(memo) as tmp:
            tmp.write_text(content + "\n")
    return content


def entry_key(content: str, *extra: object) -> str:
    """A 16-hex key for a cache entry of the files whose `content_key` is `content` (and `extra`: sizes, versions)."""
    return hashlib.sha1(" ".join(map(str, (*extra, content))).encode()).hexdigest()[:16]


def files_key(paths: Sequence[Path], cache_dir: Path | None, *extra: object) -> str:
    """`entry_key` of `paths`: a set whose entries are keyed more than once computes `content_key` once."""
    return entry_key(content_key(paths, cache_dir), *extra)
