"""The anonymous memory of every stage is bounded by the batch, not by the size of the data set."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

SMALL, LARGE = 1000, 6000  # training images of 96 px: 28 MB and 166 MB decoded
DECODED_LARGE_MB = LARGE * 96 * 96 * 3 / 2**20


def peaks(work: Path, n_train: int) -> dict[str, float]:
    out = subprocess.run([sys.executable, "-m", "tests.memory_probe", str(work), str(n_train)], cwd=REPO,
                         capture_output=True, text=True, check=True, timeout=600)  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_stage_memory_does_not_grow_with_the_data_set(tmp_path: Path) -> None:
    small, large = peaks(tmp_path / "small", SMALL), peaks(tmp_path / "large", LARGE)
    assert set(large) == {"split", "train", "predict"}
    for stage in large:
        growth = large[stage] - small[stage]
        # Holding the decoded set once would add 166 MB; a second copy of it, twice that.
        assert growth < 0.15 * DECODED_LARGE_MB, (stage, small, large)
        assert large[stage] < 64, (stage, large)  # MB above the libraries: batches, model, bookkeeping
