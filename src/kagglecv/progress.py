"""Progress of long work: a bar on a terminal, a log line every `LOG_EVERY_S` seconds otherwise.

DVC and CI capture a stage's output, where a bar would print nothing useful (or one line per
redraw); there the same progress arrives as periodic log lines with the count, the rate and an
ETA, so a log shows the stage is alive and when it will end.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterable, Iterator
from typing import Generic, TypeVar

from tqdm import tqdm

LOG_EVERY_S = 20.0  # seconds between progress lines when stderr is not a terminal

T = TypeVar("T")


def format_seconds(seconds: float) -> str:
    """`1h02m`, `4m05s` or `37s`."""
    seconds = max(0, round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds}s"


class Progress:
    """Counts work done out of `total`; shows it as a bar (terminal) or periodic lines on `log`."""

    def __init__(
        self, total: int, desc: str, *, unit: str = "it", log: logging.Logger | None = None,
        every: float | None = None, bar: bool | None = None,
    ) -> None:  # fmt: skip
        self.total, self.desc, self.unit = total, desc, unit
        self.every = LOG_EVERY_S if every is None else every
        self.log = log or logging.getLogger("kagglecv.progress")
        self.done = 0
        self.started = self.last_line = time.perf_counter()
        use_bar = sys.stderr.isatty() if bar is None else bar
        self.bar = tqdm(total=total, desc=desc, unit=unit, leave=False, dynamic_ncols=True) if use_bar else None

    def update(self, n: int = 1) -> None:
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
            return
        now = time.perf_counter()
        if now - self.last_line >= self.every and self.done < self.total:
            self.last_line = now
            self.log.info("%s", self.line(now))

    def line(self, now: float | None = None) -> str:
        """`desc: 1200/5000 (24%) 310 img/s, eta 12s`."""
        elapsed = (now or time.perf_counter()) - self.started
        rate = self.done / elapsed if elapsed > 0 else 0.0
        eta = (self.total - self.done) / rate if rate > 0 else float("inf")
        share = f" ({100 * self.done / self.total:.0f}%)" if self.total else ""
        eta_text = format_seconds(eta) if eta != float("inf") else "?"
        return f"{self.desc}: {self.done}/{self.total}{share} {rate:.0f} {self.unit}/s, eta {eta_text}"

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Tracked(Generic[T]):
    """`items` (anything with len() and iter(), e.g. a DataLoader) whose iteration reports progress."""

    def __init__(self, items: Iterable[T], desc: str, *, unit: str = "batch", log: logging.Logger | None = None,
                 every: float | None = None) -> None:  # fmt: skip
        self.items, self.desc, self.unit, self.log, self.every = items, desc, unit, log, every

    def __len__(self) -> int:
        return len(self.items)  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[T]:
        with Progress(len(self), self.desc, unit=self.unit, log=self.log, every=self.every) as progress:
            for item in self.items:
                yield item
                progress.update()
