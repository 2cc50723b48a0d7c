"""Stage `predict`: average the fold models' probabilities on the test set and write the submission.

Reads params: `batch_size`, `data.layout`; files: `models/fold<k>.pt`, `data/raw/`.
Writes: `submissions/submission.csv` (the sample submission's header, ids, order and label
type), `predictions/test_probs.csv` (averaged class probabilities per test id) and
`metrics/leaderboard.json` (`leaderboard.accuracy` or `leaderboard.log_loss` where the
competition has a `solution.csv`; empty otherwise).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from kagglecv.artifacts import write_csv, write_json
from kagglecv.data import RAW_DIR, CompetitionError, read_competition
from kagglecv.engine import predict_probs, select_precision
from kagglecv.loaders import eval_batches
from kagglecv.models import ModelError, build_model
from kagglecv.params import Params, ParamsError, load_params
from kagglecv.runtime import main_of
from kagglecv.stages.train import MODELS_DIR
from kagglecv.submission import SubmissionError, make_submission, read_sample_submission, score_submission

log = logging.getLogger("kagglecv.predict")

SUBMISSION_FILE = Path("submissions/submission.csv")
TEST_PROBS_FILE = Path("predictions/test_probs.csv")
LEADERBOARD_METRICS = Path("metrics/leaderboard.json")


def read_checkpoints(models_dir: Path) -> list[dict]:
    paths = sorted(models_dir.glob("fold*.pt"), key=lambda p: int(p.stem.removeprefix("fold")))
    if not paths:
        raise CompetitionError(f"{models_dir} has no fold checkpoints: run 'dvc repro train' first")
    return [torch.load(p, map_location="cpu", weights_only=False) for p in paths]


def predict_test(checkpoints: list[dict], images_for: callable, *, batch_size: int, amp: str) -> np.ndarray:
    """Mean of each checkpoint's softmax probabilities (N, num_classes) over the test images."""
    precision = select_precision(amp)
    total = None
    for ckpt in checkpoints:
        model = build_model(name=ckpt["model"], num_classes=ckpt["num_classes"], in_chans=ckpt["in_chans"], img_size=ckpt["img_size"])
        model.load_state_dict(ckpt["state_dict"])
        model.to(precision.device)
        images = images_for(ckpt["img_size"], ckpt["in_chans"])
        probs = predict_probs(
            model, eval_batches(images, batch_size=batch_size), precision=precision,
            mean=torch.tensor(ckpt["mean"]), std=torch.tensor(ckpt["std"]),
        )  # fmt: skip
        total = probs if total is None else total + probs
    return total / len(checkpoints)


def run(
    params: Params,
    raw_dir: Path = RAW_DIR,
    models_dir: Path = MODELS_DIR,
    submission_path: Path = SUBMISSION_FILE,
    probs_path: Path = TEST_PROBS_FILE,
    metrics_path: Path = LEADERBOARD_METRICS,
) -> dict[str, float]:
    competition = read_competition(raw_dir, params.data.layout)
    checkpoints = read_checkpoints(models_dir)
    classes = checkpoints[0]["classes"]
    cache: dict[tuple[int, int], np.ndarray] = {}

    def images_for(img_size: int, channels: int) -> np.ndarray:
        if (img_size, channels) not in cache:
            cache[img_size, channels] = competition.test_images.load(img_size=img_size, channels=channels)
        return cache[img_size, channels]

    probs = predict_test(checkpoints, images_for, batch_size=params.batch_size, amp=params.amp)
    sample = read_sample_submission(competition.sample_submission)
    submission = make_submission(sample, competition.test_ids, probs, classes)
    frame = pd.DataFrame(probs, columns=classes)
    frame.insert(0, "id", competition.test_ids)
    write_csv(probs_path, frame, float_format="%.6g")
    write_csv(submission_path, submission)
    scores = score_submission(submission, competition.solution) if competition.solution else {}
    write_json(metrics_path, {"leaderboard": scores})
    log.info("%d test predictions from %d folds -> %s %s", len(submission), len(checkpoints), submission_path, scores)
    return scores


main = main_of(lambda: run(load_params()), ParamsError, CompetitionError, ModelError, SubmissionError)

if __name__ == "__main__":
    main()
