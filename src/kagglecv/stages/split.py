"""Stage `split`: assign every training image to one of `n_folds` stratified folds.

Reads params: `seed`, `n_folds`, `data.layout`, `data.valid_split`; files: `data/raw/`. Writes
`data/folds.csv` (id, label, fold), the versioned fold assignment every later stage uses.

With `data.valid_split: holdout` and a competition that ships a validation folder, that folder
is the one validation fold: its images get fold 0 and every other image fold -1
(`TRAIN_ONLY_FOLD`), which no model validates on, so `train` trains a single model.
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedKFold

from kagglecv.artifacts import write_csv
from kagglecv.data import FOLDS_FILE, RAW_DIR, TRAIN_ONLY_FOLD, CompetitionError, read_competition
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


def make_holdout(ids: list[str], labels: list[str], valid_ids: frozenset[str]) -> pd.DataFrame:
    """Fold 0 for the given validation images, `TRAIN_ONLY_FOLD` for the rest, in the input order."""
    fold = [0 if i in valid_ids else TRAIN_ONLY_FOLD for i in ids]
    return pd.DataFrame({"id": ids, "label": labels, "fold": np.array(fold, dtype=np.int64)})


def run(params: Params, raw_dir: Path = RAW_DIR, out_path: Path = FOLDS_FILE) -> dict[str, int]:
    competition = read_competition(raw_dir, params.data.layout)
    ids, labels = competition.train_ids, competition.train_labels
    if params.data.valid_split == "holdout":
        if not competition.valid_ids:
            raise CompetitionError(
                f"data.valid_split: holdout needs a valid/ or validation/ folder in {raw_dir}; set it to merge"
            )
        folds = make_holdout(ids, labels, competition.valid_ids)
    else:
        folds = make_folds(ids, labels, n_folds=params.n_folds, seed=params.seed)
    write_csv(out_path, folds)
    n_folds = int(folds["fold"].max()) + 1
    sizes = folds["fold"].value_counts().sort_index().to_dict()
    log.info("%d images in %d validation fold(s); images per fold %s", len(folds), n_folds, sizes)
    return {"images": len(folds), "folds": n_folds}


main = main_of(lambda: run(load_params()), ParamsError, CompetitionError)

if __name__ == "__main__":
    main()
