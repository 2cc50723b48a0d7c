"""This process's memory: peak resident set, anonymous resident memory now, and its peak over a block.

Anonymous memory (`RssAnon`) is what a stage allocates itself; pages of a memory-mapped file (the
decode cache) are file-backed and the kernel can drop them, so `RssAnon` is the figure that must
stay bounded on a competition larger than RAM.
"""

from __future__ import annotations

import re
import resource
import threading
from pathlib import Path


def peak_rss_mb() -> float:
    """This process's peak resident memory (anonymous and file-backed pages), in MB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def rss_anon_mb() -> float:
    """This process's anonymous resident memory now (`RssAnon`), in MB; 0 where /proc has no such line."""
    status = Path("/proc/self/status")
    found = re.search(r"RssAnon:\s+(\d+) kB", status.read_text()) if status.exists() else None
    return int(found.group(1)) / 1024 if found else 0.0


class AnonPeak:
    """The peak of `rss_anon_mb` while the block runs, sampled every `every` seconds by a thread."""

    def __init__(self, every: float = 0.05) -> None:
        self.every, self.peak_mb = every, 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak_mb = max(self.peak_mb, rss_anon_mb())
            self._stop.wait(self.every)

    def __enter__(self) -> AnonPeak:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_mb = max(self.peak_mb, rss_anon_mb())
