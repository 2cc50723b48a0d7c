"""The stages' run() functions chained on tiny data: artifacts keep their contracts."""

import json

import numpy as np
import pandas as pd
import pytest
import torch

from kagglecv.models import build_model
from kagglecv.paths import Paths
from kagglecv.stages import evaluate, predict, split, train
from tests.conftest import shipped, with_raw


@pytest.fixture(scope="module")
def trained(digits_raw, tmp_path_factory):
    params = shipped(n_folds=2, epochs=2, img_size=8, batch_size=32, patience=1, warmup_epochs=0)
    paths = with_raw(Paths(tmp_path_factory.mktemp("run")), digits_raw)
    split.run(params, paths)
    summary = train.run(params, paths)
    evaluate.run(params, paths)
    predict.run(params, paths)
    return params, paths, summary


def test_checkpoints_describe_themselves(trained):
    params, paths, _ = trained
    ckpts = sorted(paths.models.glob("fold*.pt"))
    assert [p.name for p in ckpts] == ["fold0.pt", "fold1.pt"]
    ckpt = torch.load(ckpts[0], weights_only=False)
    assert ckpt["classes"] == [str(i) for i in range(10)]
    assert (ckpt["model"], ckpt["img_size"], ckpt["in_chans"]) == (params.model, 8, 1)
    model = build_model(name=ckpt["model"], num_classes=10, in_chans=1, img_size=8)
    model.load_state_dict(ckpt["state_dict"])  # rebuilt from the file alone


def test_oof_covers_every_training_image_once(trained, digits_raw):
    _, paths, _ = trained
    oof = pd.read_csv(paths.oof, dtype={"id": str, "label": str})
    folds = pd.read_csv(paths.folds, dtype={"id": str, "label": str})
    assert oof["id"].tolist() == folds["id"].tolist()
    assert oof["fold"].tolist() == folds["fold"].tolist()
    probs = oof[[str(i) for i in range(10)]].to_numpy()
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-4)


def test_metrics_have_the_documented_keys(trained):
    """The headline files hold only what dvc exp show lists first; the per-fold detail sits beside them."""
    _, paths, summary = trained
    cv = json.loads(paths.cv_metrics.read_text())
    assert list(cv) == ["cv"] and list(cv["cv"]) == ["accuracy", "macro_f1", "log_loss"]
    assert 0.5 < cv["cv"]["accuracy"] <= 1.0  # two epochs on 8x8 digits already learn
    cv_folds = json.loads(paths.cv_folds_metrics.read_text())["cv"]["folds"]
    assert set(cv_folds) == {"0", "1"} and set(cv_folds["0"]) == {"accuracy", "macro_f1", "log_loss"}
    lb = json.loads(paths.leaderboard_metrics.read_text())["leaderboard"]
    assert 0.5 < lb["accuracy"] <= 1.0
    headline = json.loads(paths.train_metrics.read_text())
    assert list(headline) == ["train"] and list(headline["train"]) == ["minutes", "epochs", "time_limit", "cut", "img_size", "cache_size"]
    assert headline["train"]["epochs"] == 2 and headline["train"]["cut"] is False and headline["train"]["minutes"] > 0
    detail = json.loads(paths.train_folds_metrics.read_text())["train"]
    assert set(detail["folds"]) == {"0", "1"} and detail["folds"] == summary["folds"]
    assert {"best_epoch", "epochs_run", "valid_accuracy", "seconds", "images_per_s"} == set(detail["folds"]["0"])
    confusion = pd.read_csv(paths.confusion_plot)
    assert list(confusion.columns) == ["actual", "predicted"]


def test_learning_curves_are_logged_per_fold(trained):
    _, paths, summary = trained
    for fold in (0, 1):
        curve = pd.read_csv(paths.live / f"fold{fold}/plots/metrics/valid/loss.tsv", sep="\t")
        assert summary["folds"][str(fold)]["epochs_run"] == 2  # patience 1 cannot stop a 2-epoch run early
        assert curve["step"].tolist() == [0, 1]  # one row per epoch
        assert np.isfinite(curve["loss"]).all() and (curve["loss"] > 0).all()


def test_submission_matches_the_sample_submission(trained, digits_raw):
    _, paths, _ = trained
    sample_text = (digits_raw / "sample_submission.csv").read_text().splitlines()
    sub_text = paths.submission.read_text().splitlines()
    assert sub_text[0] == sample_text[0]
    assert [line.split(",")[0] for line in sub_text] == [line.split(",")[0] for line in sample_text]
    labels = pd.read_csv(paths.submission)["Label"]
    assert labels.dtype.kind == "i" and set(labels) <= set(range(10))


def test_pictures_are_png_files(trained):
    from PIL import Image

    _, paths, _ = trained
    for path in (paths.augmented_plot, paths.confusion_image, paths.mistakes_image):
        with Image.open(path) as image:
            assert image.format == "PNG" and image.width > 32 and image.height > 32


def test_per_fold_and_per_view_test_probabilities_are_kept(trained):
    _, paths, _ = trained
    views = np.load(paths.test_views)
    probs = views["probs"]
    assert probs.shape[:2] == (2, 1) and probs.shape[3] == 10  # (folds, views, N, classes)
    assert list(views["views"]) == ["identity"]
    averaged = pd.read_csv(paths.test_probs)[[str(i) for i in range(10)]].to_numpy()
    np.testing.assert_allclose(probs.mean((0, 1)), averaged, atol=1e-5)
