"""The training keys of params.yaml: defaults load, bad values are named, pipelines are validated."""

from __future__ import annotations

import dataclasses
import re

import numpy as np
import pytest
import yaml

from kagglecv.engine import FitConfig, fit_config
from kagglecv.fold_training import epoch_subset
from kagglecv.params import EmaParams, MixupParams, Params, ParamsError, load_params
from kagglecv.transforms import TransformError, build_transforms, default_augment
from tests.conftest import REPO


def _load(tmp_path, **overrides) -> Params:
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw.update(overrides)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    return load_params(path)


def test_the_repository_params_load_and_map_onto_the_engine(tmp_path):
    params = _load(tmp_path)
    config = fit_config(params)
    assert (config.lr, config.loss, config.ema, config.mixup_alpha) == (params.lr, "cross_entropy", False, 0.0)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"scheduler": "cosin"}, "scheduler: 'cosin' is not allowed (did you mean cosine?)"),
        ({"loss": "focall"}, "loss: 'focall' is not allowed (did you mean focal?)"),
        ({"mixup": {"mixup_alpha": -1.0}}, "mixup.mixup_alpha: -1.0 is too small"),
        ({"mixup": {"alpha": 0.2}}, "mixup.alpha: unknown key"),
        ({"ema": {"enabled": "yes please"}}, "ema.enabled: expected true or false"),
        ({"devices": 0}, "devices: 0 is too small; it must be at least 1"),
        ({"accumulate": 0}, "accumulate: 0 is too small"),
        ({"mixup": {"mixup_alpha": 0.2}, "batch_size": 33}, "batch_size: 33 must be even when mixup is on"),
        ({"tta": "hflip"}, "tta: expected a list"),
    ],
)
def test_bad_values_are_named(tmp_path, overrides, message):
    with pytest.raises(ParamsError, match=re.escape(message)):
        _load(tmp_path, **overrides)


def test_devices_takes_a_count_or_auto(tmp_path):
    assert _load(tmp_path, devices=2).devices == 2
    assert _load(tmp_path, devices="auto").devices == "auto"


def test_augment_auto_and_lists(tmp_path):
    assert _load(tmp_path, augment="auto").augment == "auto"
    assert _load(tmp_path, augment=[{"HorizontalFlip": {"p": 0.5}}]).augment == [{"HorizontalFlip": {"p": 0.5}}]


@pytest.mark.parametrize("img_size", [8, 28, 224])
def test_default_augmentation_builds_for_every_size(img_size):
    transform = build_transforms(spec=default_augment(img_size), seed=0)
    image = np.zeros((img_size, img_size, 3), np.uint8)
    assert transform(image=image)["image"].shape == image.shape


def test_misspelt_test_pipeline_names_its_key():
    with pytest.raises(TransformError, match=r"augment_test\[0\]: albumentations has no transform 'CentreCrop'"):
        build_transforms(spec=[{"CentreCrop": {"height": 4, "width": 4}}], seed=0, key="augment_test")


def test_epoch_subsets_split_each_draw_among_processes():
    parts = [epoch_subset(10, seed=1, fold=0, epoch=3, rank=r, world=2) for r in (0, 1)]
    assert len(parts[0]) == len(parts[1]) == 5 and not set(parts[0]) & set(parts[1])
    assert np.array_equal(parts[0], epoch_subset(10, seed=1, fold=0, epoch=3, rank=0, world=2))
    weights = np.array([1.0] * 9 + [0.0])
    assert 9 not in epoch_subset(10, seed=1, fold=0, epoch=0, weights=weights)


def test_the_engines_config_is_derived_from_params_with_no_defaults_of_its_own():
    assert [f.name for f in dataclasses.fields(FitConfig) if f.default is not dataclasses.MISSING] == []
    params = dataclasses.replace(
        load_params(REPO / "params.yaml"), lr=0.123, patience=3, optimizer="sgd", warmup_epochs=4, clip_grad=0.5,
        ema=EmaParams(enabled=True, decay=0.5), mixup=MixupParams(mixup_alpha=0.1, cutmix_alpha=0.2, prob=0.3, switch_prob=0.4),
    )  # fmt: skip
    config = dataclasses.asdict(fit_config(params))
    flat = dataclasses.asdict(params)
    same_name = {k: v for k, v in config.items() if k in flat and k != "ema"}
    assert same_name == {k: flat[k] for k in same_name} and len(same_name) == len(config) - 6
    assert (config["ema"], config["ema_decay"]) == (True, 0.5)
    assert [config[k] for k in ("mixup_alpha", "cutmix_alpha", "mixup_prob", "mixup_switch_prob")] == [0.1, 0.2, 0.3, 0.4]
