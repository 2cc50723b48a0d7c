"""Stage `split`: assign every training image to one of `n_folds` stratified folds.

Reads params: `seed`, `n_folds`, `data.layout`; files: `data/raw/`. Writes `data/folds.csv`
(id, label, fold), the versioned fold assignment every later stage uses.
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedKFold

from kagglecv.artifacts import write_csv
from kagglecv.data import FOLDS_FILE, RAW_DIR, CompetitionError, read_competition
from kagglecv.params import Params, ParamsError, load_params
from kagglecv.runtime import main_of

log = logging.getLogger("kagglecv.split")


def make_folds(ids: list[str], labels: list[str], *, n_folds: int, seed: int) -> pd.DataFrame:
    """A seeded StratifiedKFold assignment: one row per id, in the input order."""
    counts = Counter(labels)
    rare = sorted((n, label) for label, n in counts.items() if n < n_folds)
    if rare:
        listed = ", ".join(f"{label!r} ({n})" for n, label in rare[:5])
        raise CompetitionError(f"n_folds: {n_folds} folds need at least {n_folds} images per class; too few: {listed}")
    fold = np.empty(len(ids), dtype=np.int64)
    splitter = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    for k, (_, valid) in enumerate(splitter.split(np.zeros(len(labels)), labels)):
        fold[valid] = k
    return pd.DataFrame({"id": ids, "label": labels, "fold": fold})


def run(params: Params, raw_dir: Path = RAW_DIR, out_path: Path = FOLDS_FILE) -> dict[str, int]:
    competition = read_competition(raw_dir, params.data.layout)
    folds = make_folds(competition.train_ids, competition.train_labels, n_folds=params.n_folds, seed=params.seed)
    write_csv(out_path, folds)
    sizes = folds["fold"].value_counts().sort_index().tolist()
    log.info("%d images in %d folds of %s", len(folds), params.n_folds, sizes)
    return {"images": len(folds), "folds": params.n_folds}


main = main_of(lambda: run(load_params()), ParamsError, CompetitionError)

if __name__ == "__main__":
    main()
