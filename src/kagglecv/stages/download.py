"""Stage `download`: fetch the competition into `data/raw/`, laid out as Kaggle ships it.

Reads params: `data` (`source` and its `path` / `competition` / `name`, `solution`, `layout`).
Writes: `data/raw/` (train/test files, sample submission, and `solution.csv` where the source
knows the test labels or `data.solution` names a file). A `local` folder or zip is not a DVC
dependency: after it changes, run `dvc repro -f download` (a change to `params.yaml` reruns it).
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from kagglecv.artifacts import atomic_path
from kagglecv.data import CompetitionError
from kagglecv.ingest import read_competition
from kagglecv.params import DataParams, Params, ParamsError, load_params
from kagglecv.paths import Paths
from kagglecv.runtime import main_of
from kagglecv.sources import SourceError, fetch_kaggle, fetch_local, fetch_torchvision, write_digits

log = logging.getLogger("kagglecv.download")


def fetch_competition(data: DataParams, out_dir: Path, *, previous: Path) -> None:
    """Write the competition `data.source` names to `out_dir`; `previous` is the last download, if any."""
    if data.source == "digits":
        write_digits(out_dir, test_fraction=data.test_fraction)
    elif data.source == "local":
        if not data.path:
            raise SourceError("data.path: empty; set it to the competition's folder or .zip for data.source: local")
        fetch_local(Path(data.path).expanduser(), out_dir)
    elif data.source == "kaggle":
        fetch_kaggle(data.competition, out_dir)
    else:
        fetch_torchvision(data.name, out_dir, previous=previous)
    if data.solution:
        solution = Path(data.solution).expanduser()
        if not solution.is_file():
            raise SourceError(f"data.solution: {solution} does not exist; point it at a CSV of id and true label")
        shutil.copyfile(solution, out_dir / "solution.csv")


def run(params: Params, paths: Paths = Paths()) -> dict[str, int]:
    """Write the competition to `paths.raw`, replacing it only once complete and readable (DVC leaves it
    in place meanwhile: `persist`); return its sizes."""
    out_dir = paths.raw
    with atomic_path(out_dir) as tmp:
        fetch_competition(params.data, tmp, previous=out_dir)
        try:  # refuse a competition we cannot read
            competition = read_competition(
                tmp, params.data.layout, labels_file=params.data.labels_file, check_images=False
            )
        except CompetitionError as err:  # named by where it came from: the temporary folder is gone by now
            source = f"data.path {params.data.path}" if params.data.source == "local" else f"{out_dir} (new download)"
            raise CompetitionError(str(err).replace(str(tmp), source)) from None
    summary = {"train_images": len(competition.train_ids), "test_images": len(competition.test_ids)}
    log.info("%s: %d training and %d test images in %s", params.data.source, *summary.values(), out_dir)
    return summary


main = main_of(lambda: run(load_params()), ParamsError, CompetitionError, SourceError)

if __name__ == "__main__":
    main()
