"""Stage `split`: check every image, and assign every usable training image to one of `n_folds` stratified folds.

Reads params: `seed`, `n_folds`, `task`, `metric`, `data.layout`, `data.valid_split`, `data.bad_images`,
`data.similar_labels`; files: `data/raw/`. Folds are stratified by class (by grade for an ordinal
task); for a multilabel task by iterative stratification of the label matrix (`iterstrat`).
Writes `data/folds.csv` (id, label, fold), the versioned fold assignment every later stage uses, and
`data/ingest_report.csv` (part, file, id, problem, action): every problem the ingest checks found
(`kagglecv.ingest`), also when they stop the stage. Training images left out are not in the folds.

With `data.valid_split: holdout` and a competition that ships a validation folder, that folder
is the one validation fold: its images get fold 0 and every other image fold -1
(`TRAIN_ONLY_FOLD`), which no model validates on, so `train` trains a single model.
"""

from __future__ import annotations

import dataclasses
import logging
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
from iterstrat.ml_stratifiers import MultilabelStratifiedKFold
from sklearn.model_selection import StratifiedKFold

from kagglecv.artifacts import write_csv
from kagglecv.data import TRAIN_ONLY_FOLD, CompetitionError, IngestProblem
from kagglecv.ingest import IngestError, read_competition
from kagglecv.params import Params, ParamsError, load_params
from kagglecv.paths import Paths
from kagglecv.runtime import main_of
from kagglecv.tasks import encode_labels, task_of

log = logging.getLogger("kagglecv.split")


def make_folds(ids: list[str], labels: list[str], *, n_folds: int, seed: int) -> pd.DataFrame:
    """A seeded StratifiedKFold assignment: one row per id, in the input order."""
    counts = Counter(labels)
    rare = sorted((n, label) for label, n in counts.items() if n < n_folds)
    if rare:
        listed = ", ".join(f"{label!r} ({n})" for n, label in rare[:5])
        raise CompetitionError(
            f"n_folds: {n_folds} folds need at least {n_folds} images per class; too few: {listed}; "
            f"lower n_folds or add images of those classes"
        )
    fold = np.empty(len(ids), dtype=np.int64)
    splitter = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    for k, (_, valid) in enumerate(splitter.split(np.zeros(len(labels)), labels)):
        fold[valid] = k
    return pd.DataFrame({"id": ids, "label": labels, "fold": fold})


def make_multilabel_folds(ids: list[str], labels: list[str], tags: np.ndarray, *, n_folds: int, seed: int) -> pd.DataFrame:
    """A seeded iterative stratification (Sechidis et al. 2011) of the 0/1 label matrix `tags` (N, K): every
    label's share alike in every fold; one row per id, in the input order."""
    fold = np.empty(len(ids), dtype=np.int64)
    splitter = MultilabelStratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    for k, (_, valid) in enumerate(splitter.split(np.zeros(len(labels)), tags)):
        fold[valid] = k
    return pd.DataFrame({"id": ids, "label": labels, "fold": fold})


def make_holdout(ids: list[str], labels: list[str], valid_ids: frozenset[str]) -> pd.DataFrame:
    """Fold 0 for the given validation images, `TRAIN_ONLY_FOLD` for the rest, in the input order."""
    fold = [0 if i in valid_ids else TRAIN_ONLY_FOLD for i in ids]
    return pd.DataFrame({"id": ids, "label": labels, "fold": np.array(fold, dtype=np.int64)})


def write_report(path: Path, problems: tuple[IngestProblem, ...]) -> None:
    columns = [f.name for f in dataclasses.fields(IngestProblem)]
    write_csv(path, pd.DataFrame([dataclasses.astuple(p) for p in problems], columns=columns))


def run(params: Params, paths: Paths = Paths()) -> dict[str, int]:
    """Write the folds and the ingest report; return their sizes."""
    raw_dir, report_path = paths.raw, paths.ingest_report
    try:
        competition = read_competition(
            raw_dir, params.data.layout, bad_images=params.data.bad_images, similar_labels=params.data.similar_labels,
            labels_file=params.data.labels_file, max_megapixels=params.data.max_megapixels,
        )  # fmt: skip
    except IngestError as err:
        write_report(report_path, err.problems)
        raise IngestError(f"{err} (all listed in {report_path})", err.problems) from None
    write_report(report_path, competition.problems)
    for merged in (p for p in competition.problems if p.action in ("merged", "converted")):
        log.warning("%s: %s; listed in %s", merged.file, merged.problem, report_path)
    excluded = [p for p in competition.problems if p.action == "excluded"]
    if excluded:
        log.warning(
            "left out %d unusable training image(s), e.g. %s: %s; all listed in %s",
            len(excluded), excluded[0].file, excluded[0].problem, report_path,
        )  # fmt: skip
    ids, labels = competition.train_ids, competition.train_labels
    if params.data.valid_split == "holdout":
        if not competition.valid_ids:
            raise CompetitionError(
                f"data.valid_split: holdout needs a valid/ or validation/ folder in {raw_dir}; set it to merge"
            )
        folds = make_holdout(ids, labels, competition.valid_ids)
    elif (task := task_of(params, competition)).multilabel:
        folds = make_multilabel_folds(ids, labels, encode_labels(task, labels), n_folds=params.n_folds, seed=params.seed)
    else:  # multiclass, binary, ordinal: stratified by class (grade)
        folds = make_folds(ids, labels, n_folds=params.n_folds, seed=params.seed)
    write_csv(paths.folds, folds)
    n_folds = int(folds["fold"].max()) + 1
    sizes = folds["fold"].value_counts().sort_index().to_dict()
    log.info("%d images in %d validation fold(s); images per fold %s", len(folds), n_folds, sizes)
    return {"images": len(folds), "folds": n_folds, "excluded": len(excluded)}


main = main_of(lambda: run(load_params()), ParamsError, CompetitionError)

if __name__ == "__main__":
    main()
