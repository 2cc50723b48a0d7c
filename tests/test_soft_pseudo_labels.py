"""Soft pseudo-labels: the chosen test images train on the fold ensemble's probability rows, not its top class."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from kagglecv import fold_training
from kagglecv.fold_training import FoldData, make_setup, read_training_set, train_fold
from kagglecv.ingest import read_competition
from kagglecv.params import MixupParams, ParamsError, PseudoLabelParams, load_params
from kagglecv.paths import Paths
from kagglecv.pseudo_labels import choose_pseudo_labels, with_pseudo_labels
from kagglecv.resume import ResumeStore
from kagglecv.stages import split, train
from kagglecv.tasks import Task
from tests.conftest import shipped, with_raw

TINY = dict(n_folds=2, epochs=2, model="softmax_regression", img_size=8, batch_size=32, patience=5, warmup_epochs=0)
SOFT = PseudoLabelParams(source="workspace", threshold=0.5, labels="soft")


def write_source_probs(paths: Paths) -> pd.DataFrame:
    """A made-up fold ensemble's `predictions/test_probs.csv` in the workspace (the revision `workspace`): rows
    at six significant digits, which need not sum to 1, about half of them with a top class of 0.5 or more."""
    ids = read_competition(paths.raw).test_ids
    logits = np.random.default_rng(0).normal(size=(len(ids), 10)) * 2.0
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    frame = pd.DataFrame(probs, columns=[str(c) for c in range(10)])
    frame.insert(0, "id", ids)
    paths.test_probs.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(paths.test_probs, index=False, float_format="%.6g")
    return pd.read_csv(paths.test_probs, dtype={"id": str})


def test_soft_targets_are_the_source_rows_renormalised_and_one_hot_for_training_images(
    digits_raw: Path, tmp_path: Path
) -> None:  # fmt: skip
    params = shipped(**TINY, pseudo_label=SOFT)
    paths = with_raw(Paths(tmp_path), digits_raw)
    split.run(params, paths)
    source = write_source_probs(paths).set_index("id")
    params, competition, data = read_training_set(params, paths)  # sizes resolved
    chosen = choose_pseudo_labels(params, paths, competition, data.task)
    soft = with_pseudo_labels(data, chosen, competition, params)
    hard = with_pseudo_labels(data, chosen, competition, dataclasses.replace(params, pseudo_label=PseudoLabelParams(
        source="workspace", threshold=0.5)))  # fmt: skip

    rows = source.to_numpy()
    expected = source.index[rows.max(1) / rows.sum(1) >= 0.5].tolist()
    assert chosen["id"].tolist() == expected and 0 < len(expected) < len(source)
    n = len(data.labels)
    picked = source.loc[expected].to_numpy()
    assert soft.targets.dtype == np.float32 and soft.targets.shape == (n + len(expected), 10)
    np.testing.assert_allclose(soft.targets[n:], picked / picked.sum(1, keepdims=True), rtol=1e-6)
    np.testing.assert_allclose(soft.targets[n:].sum(1), 1.0, atol=1e-6)
    assert (soft.targets[n:].max(1) < 1).all()  # soft rows, not one-hot
    np.testing.assert_array_equal(soft.targets[:n], np.eye(10, dtype=np.float32)[data.labels])
    assert hard.targets is None
    np.testing.assert_array_equal(soft.labels, hard.labels)  # the class indices stay the top class
    assert soft.labels[n:].tolist() == picked.argmax(1).tolist()
    np.testing.assert_array_equal(soft.fold_of[n:], -1)


@pytest.mark.parametrize("loader", ["tensor", "dataloader"])
def test_training_batches_carry_the_soft_targets_to_the_loss(
    loader: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:  # fmt: skip
    rng = np.random.default_rng(1)
    labels = np.tile([0, 1, 2], 8)
    soft_rows = rng.dirichlet(np.ones(3), size=8).astype(np.float32)
    targets = np.concatenate([np.eye(3, dtype=np.float32)[labels[:16]], soft_rows])
    data = FoldData(rng.integers(0, 256, (24, 8, 8, 1), dtype=np.uint8), labels, np.repeat([0, 1, -1], 8),
                    Task("multiclass", "accuracy", ["a", "b", "c"], "label"), targets=targets)  # fmt: skip
    params = shipped(**{**TINY, "epochs": 1, "batch_size": 8}, augment=[], loader=loader)
    seen = []
    real_build_trainer = fold_training.build_trainer

    def recording(*args: object, **kwargs: object) -> object:
        trainer = real_build_trainer(*args, **kwargs)
        loss_fn = trainer.loss_fn
        trainer.loss_fn = lambda logits, target: seen.append(target.clone()) or loss_fn(logits, target)
        return trainer

    monkeypatch.setattr(fold_training, "build_trainer", recording)
    result = train_fold(0, params, data, make_setup(params, data.images, 3), ResumeStore("key", tmp_path),
                        on_epoch=lambda *a, **k: None)  # fmt: skip
    got = torch.cat(seen).numpy()
    assert got.dtype == np.float32 and got.shape == (16, 3)  # fold 1's images and the train-only rows, no fold 0
    order = lambda a: a[np.lexsort(a.T[::-1])]  # noqa: E731  rows sorted, as the batches shuffle them
    np.testing.assert_array_equal(order(got), order(targets[8:]))
    assert result["oof_probs"].shape == (8, 3)  # validation: fold 0, scored on its integer labels


def run_train(digits_raw: Path, root: Path, pseudo: PseudoLabelParams) -> Paths:
    params = shipped(**TINY, pseudo_label=pseudo)
    paths = with_raw(Paths(root), digits_raw)
    split.run(params, paths)
    write_source_probs(paths)
    train.run(params, paths)
    return paths


def test_soft_labels_train_other_weights_on_the_same_images_and_folds(digits_raw: Path, tmp_path: Path) -> None:
    hard = run_train(digits_raw, tmp_path / "hard", dataclasses.replace(SOFT, labels="hard"))
    soft = run_train(digits_raw, tmp_path / "soft", SOFT)
    for fold in (0, 1):
        a = torch.load(hard.models / f"fold{fold}.pt", weights_only=False)
        b = torch.load(soft.models / f"fold{fold}.pt", weights_only=False)
        assert any(not torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])
        assert (a["params"]["pseudo_label"]["labels"], b["params"]["pseudo_label"]["labels"]) == ("hard", "soft")
    oof_hard, oof_soft = (pd.read_csv(p.oof, dtype={"id": str, "label": str}) for p in (hard, soft))
    assert oof_soft[["id", "label", "fold"]].equals(oof_hard[["id", "label", "fold"]])
    assert oof_soft["id"].tolist() == read_competition(soft.raw).train_ids  # training images only
    assert not np.allclose(oof_soft.iloc[:, 3:].to_numpy(), oof_hard.iloc[:, 3:].to_numpy())
    assert soft.pseudo_labels.read_bytes() == hard.pseudo_labels.read_bytes()  # the same images, the same file
    assert not soft.resume.exists()


def test_the_loader_names_bad_label_kinds_and_refuses_soft_labels_with_mixup(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    path.write_text("pseudo_label:\n  labels: fuzzy\n")
    with pytest.raises(ParamsError, match="pseudo_label.labels: 'fuzzy' is not allowed.*choose one of hard, soft"):
        load_params(path)
    mixup = "mixup:\n  mixup_alpha: 0.2\n"
    path.write_text(f"{mixup}pseudo_label:\n  source: base\n  labels: soft\n")
    with pytest.raises(ParamsError, match=r"pseudo_label.labels: soft cannot train with mixup.*both mixup alphas to 0.0"):
        load_params(path)
    path.write_text(f"{mixup}pseudo_label:\n  source: base\n  labels: hard\n")
    assert load_params(path).mixup == MixupParams(mixup_alpha=0.2)
    path.write_text(f"{mixup}pseudo_label:\n  labels: soft\n")  # pseudo-labelling off: nothing is trained soft
    assert load_params(path).pseudo_label.labels == "soft"


@pytest.mark.slow
def test_a_first_round_trains_its_pseudo_rows_on_its_own_ensembles_probabilities(
    digits_raw: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:  # fmt: skip
    params = shipped(**TINY, pseudo_label=PseudoLabelParams(source="first_round", threshold=0.2, labels="soft"))
    paths = with_raw(Paths(tmp_path), digits_raw)
    split.run(params, paths)
    ensembles, seen = [], []
    real_predict, real_train_fold = train.predict_test_probs, train.train_fold
    monkeypatch.setattr(train, "predict_test_probs", lambda *a: ensembles.append(real_predict(*a)) or ensembles[-1])
    monkeypatch.setattr(train, "train_fold", lambda fold, p, data, *a, **k: seen.append(data) or real_train_fold(
        fold, p, data, *a, **k))  # fmt: skip
    train.run(params, paths)

    assert [data.targets is None for data in seen] == [True, True, False, False]  # round 1 hard, round 2 soft
    chosen = pd.read_csv(paths.pseudo_labels, dtype={"id": str})
    ids = read_competition(paths.raw).test_ids
    probs = ensembles[0][[ids.index(i) for i in chosen["id"]]]
    n = len(seen[0].labels)
    assert len(seen[2].targets) == n + len(chosen) and len(chosen) > 0
    np.testing.assert_allclose(seen[2].targets[n:], probs / probs.sum(1, keepdims=True), rtol=1e-6)
    np.testing.assert_array_equal(seen[2].targets[:n], np.eye(10, dtype=np.float32)[seen[0].labels])
