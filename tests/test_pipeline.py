"""The stages' run() functions chained on tiny data: artifacts keep their contracts."""

import json

import numpy as np
import pandas as pd
import pytest
import torch

from kagglecv.models import build_model
from kagglecv.stages import evaluate, predict, split, train


@pytest.fixture(scope="module")
def trained(digits_raw, tmp_path_factory):
    import dataclasses

    from kagglecv.params import Params

    params = dataclasses.replace(Params(), n_folds=2, epochs=2, img_size=8, batch_size=32, patience=1, warmup_epochs=0)
    out = tmp_path_factory.mktemp("run")
    paths = {
        "folds": out / "folds.csv", "models": out / "models", "oof": out / "oof.csv", "live": out / "dvclive",
        "train_metrics": out / "train.json", "cv": out / "cv.json", "confusion": out / "confusion.csv",
        "submission": out / "submission.csv", "probs": out / "test_probs.csv", "lb": out / "lb.json",
        "augmented": out / "augmented.png", "confusion_png": out / "confusion.png", "mistakes": out / "mistakes.png",
        "views": out / "test_views.npz",
    }  # fmt: skip
    split.run(params, raw_dir=digits_raw, out_path=paths["folds"])
    summary = train.run(
        params, raw_dir=digits_raw, folds_path=paths["folds"], models_dir=paths["models"], oof_path=paths["oof"],
        live_dir=paths["live"], metrics_path=paths["train_metrics"], augmented_path=paths["augmented"],
    )  # fmt: skip
    evaluate.run(
        oof_path=paths["oof"], metrics_path=paths["cv"], confusion_path=paths["confusion"], params=params,
        raw_dir=digits_raw, confusion_image=paths["confusion_png"], mistakes_image=paths["mistakes"],
    )  # fmt: skip
    predict.run(
        params, raw_dir=digits_raw, models_dir=paths["models"], submission_path=paths["submission"],
        probs_path=paths["probs"], views_path=paths["views"], metrics_path=paths["lb"],
    )  # fmt: skip
    return params, paths, summary


def test_checkpoints_describe_themselves(trained):
    params, paths, _ = trained
    ckpts = sorted(paths["models"].glob("fold*.pt"))
    assert [p.name for p in ckpts] == ["fold0.pt", "fold1.pt"]
    ckpt = torch.load(ckpts[0], weights_only=False)
    assert ckpt["classes"] == [str(i) for i in range(10)]
    assert (ckpt["model"], ckpt["img_size"], ckpt["in_chans"]) == (params.model, 8, 1)
    model = build_model(name=ckpt["model"], num_classes=10, in_chans=1, img_size=8)
    model.load_state_dict(ckpt["state_dict"])  # rebuilt from the file alone


def test_oof_covers_every_training_image_once(trained, digits_raw):
    _, paths, _ = trained
    oof = pd.read_csv(paths["oof"], dtype={"id": str, "label": str})
    folds = pd.read_csv(paths["folds"], dtype={"id": str, "label": str})
    assert oof["id"].tolist() == folds["id"].tolist()
    assert oof["fold"].tolist() == folds["fold"].tolist()
    probs = oof[[str(i) for i in range(10)]].to_numpy()
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-4)


def test_metrics_have_the_documented_keys(trained):
    """The headline files hold only what dvc exp show lists first; the per-fold detail sits beside them."""
    _, paths, summary = trained
    cv = json.loads(paths["cv"].read_text())
    assert list(cv) == ["cv"] and list(cv["cv"]) == ["accuracy", "macro_f1", "log_loss"]
    assert 0.5 < cv["cv"]["accuracy"] <= 1.0  # two epochs on 8x8 digits already learn
    cv_folds = json.loads(paths["cv"].with_name("cv_folds.json").read_text())["cv"]["folds"]
    assert set(cv_folds) == {"0", "1"} and set(cv_folds["0"]) == {"accuracy", "macro_f1", "log_loss"}
    lb = json.loads(paths["lb"].read_text())["leaderboard"]
    assert 0.5 < lb["accuracy"] <= 1.0
    headline = json.loads(paths["train_metrics"].read_text())
    assert list(headline) == ["train"] and list(headline["train"]) == ["minutes", "epochs", "time_limit", "cut", "img_size", "cache_size"]
    assert headline["train"]["epochs"] == 2 and headline["train"]["cut"] is False and headline["train"]["minutes"] > 0
    detail = json.loads(paths["train_metrics"].with_name("train_folds.json").read_text())["train"]
    assert set(detail["folds"]) == {"0", "1"} and detail["folds"] == summary["folds"]
    assert {"best_epoch", "epochs_run", "valid_accuracy", "seconds", "images_per_s"} == set(detail["folds"]["0"])
    confusion = pd.read_csv(paths["confusion"])
    assert list(confusion.columns) == ["actual", "predicted"]


def test_learning_curves_are_logged_per_fold(trained):
    _, paths, _ = trained
    for fold in (0, 1):
        curve = pd.read_csv(paths["live"] / f"fold{fold}/plots/metrics/valid/loss.tsv", sep="\t")
        assert len(curve) >= 1 and {"step", "loss"} <= set(curve.columns)


def test_submission_matches_the_sample_submission(trained, digits_raw):
    _, paths, _ = trained
    sample_text = (digits_raw / "sample_submission.csv").read_text().splitlines()
    sub_text = paths["submission"].read_text().splitlines()
    assert sub_text[0] == sample_text[0]
    assert [line.split(",")[0] for line in sub_text] == [line.split(",")[0] for line in sample_text]
    labels = pd.read_csv(paths["submission"])["Label"]
    assert labels.dtype.kind == "i" and set(labels) <= set(range(10))


def test_pictures_are_png_files(trained):
    from PIL import Image

    _, paths, _ = trained
    for name in ("augmented", "confusion_png", "mistakes"):
        with Image.open(paths[name]) as image:
            assert image.format == "PNG" and image.width > 32 and image.height > 32


def test_per_fold_and_per_view_test_probabilities_are_kept(trained):
    _, paths, _ = trained
    views = np.load(paths["views"])
    probs = views["probs"]
    assert probs.shape[:2] == (2, 1) and probs.shape[3] == 10  # (folds, views, N, classes)
    assert list(views["views"]) == ["identity"]
    averaged = pd.read_csv(paths["probs"])[[str(i) for i in range(10)]].to_numpy()
    np.testing.assert_allclose(probs.mean((0, 1)), averaged, atol=1e-5)
