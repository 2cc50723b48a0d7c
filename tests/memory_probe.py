"""Peak anonymous memory (RssAnon) of the split, train and predict stages on a generated photo competition.

    python -m tests.memory_probe WORKDIR N_TRAIN   ->   one JSON line: {"split": MB, "train": MB, "predict": MB}

Each stage's `run()` is called in this one process, after the set-up every stage's `main()` does, with a thread sampling `/proc/self/status`; the
figure per stage is its peak minus the process's anonymous memory just before it, so the libraries
loaded by an earlier stage do not count against a later one.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

from kagglecv.bench_photo import write_photo_competition
from kagglecv.memory import AnonPeak, rss_anon_mb
from kagglecv.params import DataParams, load_params
from kagglecv.paths import Paths
from kagglecv.runtime import bound_heap
from kagglecv.stages import predict, split, train

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    work, n_train = Path(sys.argv[1]), int(sys.argv[2])
    write_photo_competition(work / "data/raw", n_train=n_train, n_test=200, size=128, n_classes=4)
    paths = Paths(work)
    params = dataclasses.replace(
        load_params(REPO / "params.yaml"), n_folds=2, epochs=1, model="softmax_regression", img_size=96, batch_size=32,
        augment=[], data=DataParams(layout="labels_csv"),
    )  # fmt: skip
    import torch  # noqa: F401  loaded before the first measurement, as every stage loads it

    bound_heap()  # as every stage's main() does

    stages = {
        "split": lambda: split.run(params, paths),
        "train": lambda: train.run(params, paths),
        "predict": lambda: predict.run(params, paths),
    }
    peaks = {}
    for name, run_stage in stages.items():
        before = rss_anon_mb()
        with AnonPeak(every=0.01) as anon:
            run_stage()
        peaks[name] = round(anon.peak_mb - before, 1)
    print(json.dumps(peaks))


if __name__ == "__main__":
    main()
