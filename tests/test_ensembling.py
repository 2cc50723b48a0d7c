"""Ensembles inside one experiment: several seeds per fold, checkpoint soups, and a pseudo-labelling round."""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from kagglecv import fold_training
from kagglecv.ingest import read_competition
from kagglecv.params import ParallelParams, ParamsError, PseudoLabelParams, load_params, training_seeds
from kagglecv.paths import Paths
from kagglecv.stages import evaluate, predict, split, train
from kagglecv.stopping import EarlyStopping, average_states
from tests.conftest import shipped, with_raw

TINY = dict(n_folds=2, epochs=2, model="softmax_regression", img_size=8, batch_size=32, patience=5, warmup_epochs=0)


def trained(digits_raw: Path, root: Path, **changes: object) -> Paths:
    params = shipped(**{**TINY, **changes})
    paths = with_raw(Paths(root), digits_raw)
    split.run(params, paths)
    train.run(params, paths)
    return paths


def read_oof(paths: Paths) -> pd.DataFrame:
    return pd.read_csv(paths.oof, dtype={"id": str, "label": str})


def test_training_seeds_are_a_count_from_seed_or_a_list() -> None:
    assert training_seeds(shipped()) == [42]
    assert training_seeds(shipped(seed=7, seeds=3)) == [7, 8, 9]
    assert training_seeds(shipped(seeds=[42, 7, 1])) == [42, 7, 1]


def test_one_seed_in_a_list_is_the_default_run_byte_for_byte(digits_raw: Path, tmp_path: Path) -> None:
    default = trained(digits_raw, tmp_path / "a")
    listed = trained(digits_raw, tmp_path / "b", seeds=[42])
    assert default.oof.read_bytes() == listed.oof.read_bytes()
    assert not (tmp_path / "a/predictions/pseudo_labels.csv").read_text().strip().count("\n")  # a header, no rows


def test_seeds_train_each_fold_once_per_seed_and_average_them(digits_raw: Path, tmp_path: Path) -> None:
    both = trained(digits_raw, tmp_path / "both", seeds=[3, 5])
    alone = [read_oof(trained(digits_raw, tmp_path / str(s), seeds=[s])) for s in (3, 5)]
    assert sorted(p.name for p in both.models.glob("*.pt")) == ["fold0-1.pt", "fold0.pt", "fold1-1.pt", "fold1.pt"]
    assert torch.load(both.models / "fold1-1.pt", weights_only=False)["params"]["seed"] == 5
    classes = [str(i) for i in range(10)]
    mean = (alone[0][classes].to_numpy() + alone[1][classes].to_numpy()) / 2
    np.testing.assert_allclose(read_oof(both)[classes].to_numpy(), mean, atol=2e-6)
    assert alone[0][classes].to_numpy().tolist() != alone[1][classes].to_numpy().tolist()  # the seeds differ
    evaluate.run(shipped(**{**TINY, "seeds": [3, 5]}), both)  # predict applies evaluate's decision rule
    predict.run(shipped(**{**TINY, "seeds": [3, 5]}), both)
    assert np.load(both.test_views)["probs"].shape[:2] == (4, 1)  # (fold x seed models, views)


def test_early_stopping_keeps_the_best_epochs_for_a_soup() -> None:
    stopper = EarlyStopping(patience=9, keep=2)
    for epoch, loss in enumerate([0.9, 0.5, 0.7, 0.6]):
        stopper.update(loss, epoch, {"w": torch.full((2,), float(epoch))}, np.zeros(1))
    assert [(value, epoch) for value, epoch, _ in stopper.kept] == [(0.5, 1), (0.6, 3)]
    soup = average_states([state for _, _, state in stopper.kept])
    assert soup["w"].tolist() == [2.0, 2.0]
    mixed = average_states([{"n": torch.tensor(3), "x": torch.ones(1)}, {"n": torch.tensor(5), "x": torch.zeros(1)}])
    assert mixed["n"].item() == 3 and mixed["x"].item() == 0.5  # an integer counter is not averaged


def test_a_soup_changes_the_model_and_its_out_of_fold_predictions(digits_raw: Path, tmp_path: Path) -> None:
    best = trained(digits_raw, tmp_path / "best", epochs=3)
    soup = trained(digits_raw, tmp_path / "soup", epochs=3, soup=2)
    a = torch.load(best.models / "fold0.pt", weights_only=False)["state_dict"]
    b = torch.load(soup.models / "fold0.pt", weights_only=False)["state_dict"]
    assert any(not torch.equal(a[k], b[k]) for k in a)
    assert read_oof(best).iloc[:, 3:].to_numpy().tolist() != read_oof(soup).iloc[:, 3:].to_numpy().tolist()


def test_a_pseudo_label_round_adds_only_confident_test_images_to_training(
    digits_raw: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    params = shipped(**TINY)
    paths = trained(digits_raw, tmp_path)
    evaluate.run(params, paths)
    predict.run(params, paths)  # round 1: predictions/test_probs.csv in the workspace
    test_probs = pd.read_csv(paths.test_probs, dtype={"id": str})
    confidence = test_probs.iloc[:, 1:].to_numpy().max(1)
    threshold = float(np.quantile(confidence, 0.7))  # the top 30 % or so (the CSV's rounding may tie a few)
    expected = test_probs["id"][confidence / test_probs.iloc[:, 1:].to_numpy().sum(1) >= threshold].tolist()
    assert 0 < len(expected) < len(test_probs)
    oof_before = read_oof(paths)[["id", "label", "fold"]]
    seen = []
    real_train_fold = train.train_fold
    monkeypatch.setattr(train, "train_fold", lambda fold, p, data, *a, **k: seen.append(data) or real_train_fold(fold, p, data, *a, **k))
    pseudo = dataclasses.replace(params, pseudo_label=PseudoLabelParams(source="workspace", threshold=threshold))
    summary = train.run(pseudo, paths)

    chosen = pd.read_csv(paths.pseudo_labels, dtype={"id": str, "label": str})
    assert chosen["id"].tolist() == expected  # test ids only, in the test set's order
    assert set(chosen["id"]) <= set(test_probs["id"])
    top = test_probs.set_index("id").loc[expected].to_numpy().argmax(1)
    assert chosen["label"].tolist() == [str(c) for c in top]
    assert summary["pseudo_labels"] == len(expected) == json.loads(paths.train_metrics.read_text())["train"]["pseudo_labels"]
    data = seen[0]
    n_train = len(oof_before)
    assert len(data.images) == n_train + len(expected)
    assert (data.fold_of[n_train:] == -1).all()  # trained on by every fold, validated by none
    assert data.labels[n_train:].tolist() == top.tolist()
    competition = read_competition(paths.raw)
    test_images = competition.test_images.load(img_size=8, channels=data.images.shape[-1])
    np.testing.assert_array_equal(data.images[n_train:], test_images[[competition.test_ids.index(i) for i in expected]])
    np.testing.assert_array_equal(data.images[:n_train], competition.train_images.load(img_size=8, channels=1))
    assert read_oof(paths)[["id", "label", "fold"]].equals(oof_before)  # out-of-fold rows: the training images only


def test_the_loader_names_bad_seeds_and_thresholds(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    path.write_text("soup: 0\npseudo_label:\n  threshold: 1.5\n")
    with pytest.raises(ParamsError, match=r"soup: 0 is too small(.|\n)*pseudo_label.threshold: 1.5 is too large"):
        load_params(path)
    for seeds in ("[7, 7]", "[]"):
        path.write_text(f"seeds: {seeds}\n")
        with pytest.raises(ParamsError, match="must list at least one seed, each once"):
            load_params(path)


def pseudo_threshold(paths: Paths, share: float) -> tuple[float, list[str]]:
    """A threshold between two of the ensemble's test confidences (clear of the CSV's rounding) that about
    `share` of the test images reach, and their ids."""
    test_probs = pd.read_csv(paths.test_probs, dtype={"id": str})
    probs = test_probs.iloc[:, 1:].to_numpy()
    confidence = np.sort(probs.max(1) / probs.sum(1))
    at = int(len(confidence) * (1 - share))
    at += int(np.argmax(np.diff(confidence[at:]) > 1e-4))  # the first gap wider than the rounding
    threshold = float(confidence[at : at + 2].mean())
    return threshold, test_probs["id"][probs.max(1) / probs.sum(1) >= threshold].tolist()


@pytest.mark.slow
def test_a_first_round_pseudo_labels_this_experiments_own_test_predictions(
    digits_raw: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    params = shipped(**TINY)
    plain = trained(digits_raw, tmp_path / "plain")  # what the first round trains
    evaluate.run(params, plain)
    predict.run(params, plain)  # its fold ensemble's test probabilities
    threshold, expected = pseudo_threshold(plain, 0.3)
    assert 0 < len(expected) < len(pd.read_csv(plain.test_probs))
    revision = dataclasses.replace(params, pseudo_label=PseudoLabelParams(source="workspace", threshold=threshold))
    train.run(revision, plain)  # the same round from the revision's files: its output is the reference

    seen = []
    real_train_fold = train.train_fold
    monkeypatch.setattr(train, "train_fold",
                        lambda fold, p, data, *a, **k: seen.append((fold, data)) or real_train_fold(fold, p, data, *a, **k))
    own = dataclasses.replace(params, pseudo_label=PseudoLabelParams(source="first_round", threshold=threshold))
    paths = with_raw(Paths(tmp_path / "own"), digits_raw)
    split.run(own, paths)
    with caplog.at_level(logging.INFO, logger="kagglecv.train"):
        summary = train.run(own, paths)

    n_train = len(read_oof(paths))
    assert [(fold, len(data.images)) for fold, data in seen] == [(0, n_train), (1, n_train)] + [
        (0, n_train + len(expected)), (1, n_train + len(expected))]  # round 1 without, round 2 with the test images
    assert (seen[2][1].fold_of[n_train:] == -1).all()  # never in a validation fold
    chosen = pd.read_csv(paths.pseudo_labels, dtype={"id": str, "label": str})
    assert chosen["id"].tolist() == expected
    reference = pd.read_csv(plain.pseudo_labels, dtype={"id": str, "label": str})
    assert chosen[["id", "label"]].equals(reference[["id", "label"]])
    np.testing.assert_allclose(chosen["confidence"], reference["confidence"], atol=2e-6)  # test_probs.csv's rounding
    assert paths.oof.read_bytes() == plain.oof.read_bytes()  # the second round's, as from the revision
    for fold in (0, 1):
        a = torch.load(paths.models / f"fold{fold}.pt", weights_only=False)["state_dict"]
        b = torch.load(plain.models / f"fold{fold}.pt", weights_only=False)["state_dict"]
        assert all(torch.equal(a[k], b[k]) for k in a)
    written = json.loads(paths.train_metrics.read_text())["train"]
    assert summary["pseudo_labels"] == len(expected) == written["pseudo_labels"]
    assert set(json.loads(paths.train_folds_metrics.read_text())["train"]["first_round"]["folds"]) == {"0", "1"}
    assert "round 1/2: the folds without pseudo-labels" in caplog.text
    assert "round 2/2 fold 2/2 epoch  2/2" in caplog.text
    assert not paths.resume.exists()  # both rounds' resume state cleared


@pytest.mark.slow
def test_an_interrupted_first_round_run_trains_no_finished_fold_again(
    digits_raw: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    own = shipped(**TINY, pseudo_label=PseudoLabelParams(source="first_round", threshold=0.5))
    whole = trained(digits_raw, tmp_path / "whole", pseudo_label=own.pseudo_label)
    paths = with_raw(Paths(tmp_path / "cut"), digits_raw)
    split.run(own, paths)
    make_logger = train._epoch_logger

    def logger(live, fold, *args):
        log_epoch = make_logger(live, fold, *args)

        def on_epoch(entry, replayed=False):
            log_epoch(entry, replayed)
            if not replayed and args[-1].startswith("round 2") and (fold, entry.epoch) == (1, 0):
                raise KeyboardInterrupt("round 2, fold 1, after its first epoch")

        return on_epoch

    with monkeypatch.context() as patch:
        patch.setattr(train, "_epoch_logger", logger)
        with pytest.raises(KeyboardInterrupt):
            train.run(own, paths)
    fits = []
    real_fit = fold_training.fit
    monkeypatch.setattr(fold_training, "fit", lambda *a, **k: fits.append(k.get("resume")) or real_fit(*a, **k))
    with caplog.at_level(logging.INFO, logger="kagglecv.train"):
        train.run(own, paths)
    assert len(fits) == 1 and fits[0]["epochs_done"] == 1  # only round 2's fold 1, from its saved epoch
    assert caplog.text.count("finished by an earlier, interrupted run; reusing its results") == 3
    assert paths.oof.read_bytes() == whole.oof.read_bytes()


@pytest.mark.slow
def test_a_first_round_on_two_workers_gives_the_files_of_one_process(
    digits_raw: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    own = PseudoLabelParams(source="first_round", threshold=0.5)
    alone = trained(digits_raw, tmp_path / "alone", pseudo_label=own, parallel=ParallelParams(threads=1))
    with caplog.at_level(logging.INFO, logger="kagglecv.train"):
        workers = trained(digits_raw, tmp_path / "workers", pseudo_label=own,
                          parallel=ParallelParams(folds=2, threads=1))  # fmt: skip
    assert caplog.text.count("training folds [0, 1] on 2 local worker(s)") == 2  # the first round's, then the second's
    assert workers.oof.read_bytes() == alone.oof.read_bytes()
    assert workers.pseudo_labels.read_bytes() == alone.pseudo_labels.read_bytes()
    for fold in (0, 1):
        a = torch.load(alone.models / f"fold{fold}.pt", weights_only=False)["state_dict"]
        b = torch.load(workers.models / f"fold{fold}.pt", weights_only=False)["state_dict"]
        assert all(torch.equal(a[k], b[k]) for k in a)


def test_the_loader_takes_first_round_and_names_a_misspelling(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    path.write_text("pseudo_label:\n  source: first_round\n")
    assert load_params(path).pseudo_label.source == "first_round"
    path.write_text("pseudo_label:\n  source: First-Round\n")
    with pytest.raises(ParamsError, match="source: 'First-Round' reads like first_round; write first_round"):
        load_params(path)
