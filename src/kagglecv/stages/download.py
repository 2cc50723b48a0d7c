"""Stage `download`: fetch the competition into `data/raw/`, laid out as Kaggle ships it.

Reads params: `data`. Writes: `data/raw/` (train/test files, sample submission, and
`solution.csv` where the source knows the test labels).
"""

from __future__ import annotations

import logging
from pathlib import Path

from kagglecv.artifacts import atomic_path
from kagglecv.data import RAW_DIR, CompetitionError, read_competition
from kagglecv.params import Params, ParamsError, load_params
from kagglecv.runtime import main_of
from kagglecv.sources import write_digits

log = logging.getLogger("kagglecv.download")


def run(params: Params, out_dir: Path = RAW_DIR) -> dict[str, int]:
    """Write the competition to `out_dir` (replacing it only once complete); return its sizes."""
    with atomic_path(out_dir) as tmp:
        if params.data.source == "digits":
            write_digits(tmp, test_fraction=params.data.test_fraction)
        competition = read_competition(tmp, params.data.layout)  # refuse a competition we cannot read
    summary = {"train_images": len(competition.train_ids), "test_images": len(competition.test_ids)}
    log.info("%s: %d training and %d test images in %s", params.data.source, *summary.values(), out_dir)
    return summary


main = main_of(lambda: run(load_params()), ParamsError, CompetitionError)

if __name__ == "__main__":
    main()
