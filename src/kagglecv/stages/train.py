"""Stage `train`: one model per fold, trained on the other folds, early-stopped on its own.

Reads params: the training knobs (`seed`, `model`, `img_size`, `epochs`, `batch_size`, `lr`, …,
`augment`, `data.layout`, `data.channels`); files: `data/raw/`, `data/folds.csv`.
Writes: `models/fold<k>.pt` (self-describing checkpoints), `predictions/oof.csv` (out-of-fold
class probabilities for every training image), `dvclive/fold<k>/` (per-epoch curves) and
`metrics/train.json` (best epoch, epochs run, seconds and throughput per fold).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from dvclive import Live

from kagglecv.artifacts import write_checkpoint, write_csv, write_json
from kagglecv.data import FOLDS_FILE, RAW_DIR, CompetitionError, read_competition, read_folds
from kagglecv.engine import EpochLog, FitConfig, TrainingDiverged, fit, select_precision
from kagglecv.loaders import eval_batches, train_batches
from kagglecv.models import ModelError, build_model
from kagglecv.params import Params, ParamsError, load_params
from kagglecv.runtime import main_of, seed_everything, use_deterministic_algorithms
from kagglecv.transforms import TransformError

log = logging.getLogger("kagglecv.train")

MODELS_DIR = Path("models")
OOF_FILE = Path("predictions/oof.csv")
LIVE_DIR = Path("dvclive")
TRAIN_METRICS = Path("metrics/train.json")


def channel_stats(images: np.ndarray) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of uint8 (N, H, W, C) images, in [0, 1] units."""
    flat = images.reshape(-1, images.shape[-1]).astype(np.float64) / 255.0
    return flat.mean(0).tolist(), np.maximum(flat.std(0), 1e-3).tolist()


def fit_config(params: Params) -> FitConfig:
    names = {f.name for f in dataclasses.fields(FitConfig)}
    return FitConfig(**{k: v for k, v in dataclasses.asdict(params).items() if k in names})


def run(
    params: Params,
    raw_dir: Path = RAW_DIR,
    folds_path: Path = FOLDS_FILE,
    models_dir: Path = MODELS_DIR,
    oof_path: Path = OOF_FILE,
    live_dir: Path = LIVE_DIR,
    metrics_path: Path = TRAIN_METRICS,
) -> dict:
    """Train every fold; return the per-fold summary written to `metrics_path`."""
    use_deterministic_algorithms(params.deterministic)
    competition = read_competition(raw_dir, params.data.layout)
    folds = read_folds(folds_path)
    if folds["id"].tolist() != competition.train_ids:
        raise CompetitionError(f"{folds_path} does not match {raw_dir}: run 'dvc repro split' again")
    classes = competition.classes
    labels = np.array([classes.index(label) for label in competition.train_labels])
    images = competition.train_images.load(img_size=params.img_size, channels=params.data.channels)
    mean, std = channel_stats(images)
    precision = select_precision(params.amp)
    n_folds = int(folds["fold"].max()) + 1
    log.info(
        "%d images %s, %d classes, %d folds, model %s on %s%s",
        len(images), images.shape[1:], len(classes), n_folds, params.model, precision.device,
        f" with {precision.amp_dtype} autocast" if precision.amp_dtype else "",
    )  # fmt: skip
    oof = np.zeros((len(images), len(classes)), np.float32)
    summary: dict[str, dict] = {}
    started = time.perf_counter()
    for fold in range(n_folds):
        seed_everything(params.seed + fold)
        valid = folds["fold"].to_numpy() == fold
        model = build_model(name=params.model, num_classes=len(classes), in_chans=images.shape[-1], img_size=params.img_size)
        batches = train_batches(
            images[~valid], labels[~valid], params.augment, batch_size=params.batch_size, seed=params.seed,
            fold=fold, num_workers=params.num_workers, loader=params.loader, device=precision.device,
        )  # fmt: skip
        valid_batches = eval_batches(images[valid], batch_size=params.batch_size, device=precision.device)
        with Live(dir=str(live_dir / f"fold{fold}"), dvcyaml=None, save_dvc_exp=False, report=None) as live:
            progress = _epoch_logger(live, fold, n_folds, params.epochs, started)
            result = fit(
                model, batches, lambda: valid_batches,
                labels[valid], config=fit_config(params), precision=precision,
                mean=torch.tensor(mean), std=torch.tensor(std), on_epoch=progress,
            )  # fmt: skip
        oof[valid] = result.best_probs
        best = result.history[result.best_epoch]
        write_checkpoint(models_dir / f"fold{fold}.pt", {
            "model": params.model, "num_classes": len(classes), "in_chans": images.shape[-1],
            "img_size": params.img_size, "classes": classes, "mean": mean, "std": std,
            "fold": fold, "best_epoch": result.best_epoch, "valid_accuracy": best.valid_accuracy,
            "params": dataclasses.asdict(params), "state_dict": result.best_state,
        })  # fmt: skip
        summary[str(fold)] = {
            "best_epoch": result.best_epoch + 1,
            "epochs_run": len(result.history),
            "valid_accuracy": round(best.valid_accuracy, 6),
            "seconds": round(sum(e.seconds for e in result.history), 2),
            "images_per_s": round(float(np.median([e.images_per_s for e in result.history])), 1),
        }
    frame = pd.DataFrame(oof, columns=classes)
    frame.insert(0, "fold", folds["fold"].to_numpy())
    frame.insert(0, "label", competition.train_labels)
    frame.insert(0, "id", competition.train_ids)
    write_csv(oof_path, frame, float_format="%.6g")
    totals = {"seconds": round(time.perf_counter() - started, 2)}
    write_json(metrics_path, {"train": {**totals, "folds": summary}})
    return {"folds": summary, **totals}


def _epoch_logger(live: Live, fold: int, n_folds: int, epochs: int, started: float):
    """One log line per epoch (with an ETA for the whole stage) and dvclive's curves."""

    def on_epoch(e: EpochLog) -> None:
        for name, value in (
            ("train/loss", e.train_loss), ("train/accuracy", e.train_accuracy),
            ("valid/loss", e.valid_loss), ("valid/accuracy", e.valid_accuracy), ("lr", e.lr),
        ):  # fmt: skip
            live.log_metric(name, value, plot=True)
        live.next_step()
        done = fold * epochs + e.epoch + 1
        eta = (time.perf_counter() - started) / done * (n_folds * epochs - done)
        log.info(
            "fold %d/%d epoch %2d/%d  train %.4f %.4f  valid %.4f %.4f%s  %.1fs %.0f img/s  eta <%.0fs",
            fold + 1, n_folds, e.epoch + 1, epochs, e.train_loss, e.train_accuracy, e.valid_loss,
            e.valid_accuracy, " *" if e.improved else "  ", e.seconds, e.images_per_s, eta,
        )  # fmt: skip

    return on_epoch


main = main_of(lambda: run(load_params()), ParamsError, CompetitionError, ModelError, TransformError, TrainingDiverged)

if __name__ == "__main__":
    main()
