"""Process set-up shared by every stage: logging, seeding, the stage entry wrapper."""

from __future__ import annotations

import logging
import os
import random
import sys
from collections.abc import Callable

import numpy as np
import torch

log = logging.getLogger("kagglecv")


def setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", datefmt="%H:%M:%S")


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch so a run with the same params repeats exactly on the CPU."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    os.environ.setdefault("PYTHONHASHSEED", str(seed))


def main_of(run_stage: Callable[[], object], *errors: type[Exception]) -> Callable[[], None]:
    """A stage's `main`: run it, and turn the expected errors into one line on stderr and exit 1."""

    def main() -> None:
        setup_logging()
        try:
            run_stage()
        except errors as err:
            print(f"error: {err}", file=sys.stderr)
            raise SystemExit(1) from None

    return main
