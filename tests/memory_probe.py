"""Peak anonymous memory (RssAnon) and file-backed memory (RssFile: the mapped decode cache, and libraries) of the
split, train and predict stages on a generated photo competition.

    python -m tests.memory_probe WORKDIR N_TRAIN   ->   one JSON line: {"split": {"anon": MB, "file": MB}, "train": …}

Each stage's `run()` is called in this one process, after the set-up every stage's `main()` does, with a thread
sampling `/proc/self/status`; the figures per stage are its peaks minus the process's figures just before it, so
the libraries loaded by an earlier stage do not count against a later one. The cache's mapped pages are held to
`PROBE_MAPPED_BYTES`, far below either set, so what stays mapped beyond that budget shows as growth with the set.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

from kagglecv.bench_photo import write_photo_competition
from kagglecv import memory
from kagglecv.memory import ResidentPeak, rss_anon_mb, rss_file_mb
from kagglecv.params import DataParams, load_params
from kagglecv.paths import Paths
from kagglecv.runtime import bound_heap
from kagglecv.stages import predict, split, train

REPO = Path(__file__).resolve().parents[1]
PROBE_MAPPED_BYTES = 8 << 20  # memory.MAPPED_BYTES here: a fraction of the smaller set (28 MB)


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
    memory.MAPPED_BYTES = PROBE_MAPPED_BYTES

    stages = {
        "split": lambda: split.run(params, paths),
        "train": lambda: train.run(params, paths),
        "predict": lambda: predict.run(params, paths),
    }
    peaks = {}
    for name, run_stage in stages.items():
        anon, file = rss_anon_mb(), rss_file_mb()
        with ResidentPeak(every=0.01) as peak:
            run_stage()
        peaks[name] = {"anon": round(peak.anon_mb - anon, 1), "file": round(peak.file_mb - file, 1)}
    print(json.dumps(peaks))


if __name__ == "__main__":
    main()
