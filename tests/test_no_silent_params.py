"""check_params, the first stage dvc repro runs, stops on every parameter error a later stage would find only
after DVC removed its outputs: a model name, its smallest img_size, a test-time view."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from kagglecv import models
from kagglecv.models import build_model
from kagglecv.params import Params, ParamsError, load_params
from kagglecv.paths import Paths
from kagglecv.stages import check_params
from tests.conftest import REPO


def check(paths: Paths) -> Params:
    """The stage as its main runs it: the loader, then the stage's own checks."""
    return check_params.run(load_params(paths.params), paths)


def write(tmp_path: Path, text: str) -> Paths:
    """A project under `tmp_path` whose params.yaml is `text`."""
    paths = Paths(tmp_path)
    paths.params.write_text(text)
    return paths


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("img_size: 2\n", "img_size: 2 is too small for model kcv_cnn; the smallest it accepts is 4"),
        ("model: vgg_style\nimg_size: 1\n",
         "img_size: 1 is too small for model vgg_style; the smallest it accepts is 2"),
        ("tta: [hflip, bogus]\n", "tta[1]: unknown view 'bogus'; use hflip, vflip or shift:DX:DY"),
        ("model: does_not_exist\n", "model: unknown model 'does_not_exist'"),
        ("model: convnext_nano\nimg_size: 8\n",
         "img_size: 8 is too small for model convnext_nano; the smallest it accepts is 32"),
    ],
)  # fmt: skip
def test_check_params_stops_on_what_train_would_find(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ParamsError, match="1 problem") as err:
        check(write(tmp_path, text))
    assert message in str(err.value)


def test_the_smallest_size_that_works_passes(tmp_path: Path) -> None:
    assert check(write(tmp_path, "img_size: 4\ntta: [shift:1:0]\n")).img_size == 4
    assert check(write(tmp_path, "model: test_resnet\nimg_size: 3\n")).model == "test_resnet"


@pytest.mark.parametrize("name", sorted(check_params.OWN_MODELS))
def test_own_models_table_gives_the_smallest_size_each_model_accepts(name: str) -> None:
    assert set(check_params.OWN_MODELS) == models._OURS

    def runs(side: int) -> bool:
        model = build_model(name=name, num_classes=3, in_chans=1, img_size=side).eval()
        try:
            with torch.no_grad():
                return model(torch.zeros(2, 1, side, side)).shape == (2, 3)
        except RuntimeError:
            return False

    smallest = check_params.OWN_MODELS[name]
    assert runs(smallest) and runs(smallest + 1)
    assert smallest == 1 or not runs(smallest - 1)


def test_the_shipped_params_pass(tmp_path: Path) -> None:
    assert check(Paths(REPO)).model in check_params.OWN_MODELS


def test_augment_names_are_checked_too(tmp_path: Path) -> None:
    with pytest.raises(ParamsError, match=r"augment\[1\]: albumentations has no transform 'Afine'; closest: Affine"):
        check(write(tmp_path, "augment:\n  - HorizontalFlip: {p: 0.5}\n  - Afine: {p: 1.0}\n"))


def test_values_the_last_successful_train_ran_with_are_not_checked_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The heavy checks (timm, albumentations) run only for a model, img_size or pipeline train has not used."""
    text = "model: resnet18\nimg_size: 8\naugment:\n  - HorizontalFlip: {p: 0.5}\n"
    lock = {"stages": {"train": {"params": {"params.yaml": {
        "model": "resnet18", "img_size": 8, "augment": [{"HorizontalFlip": {"p": 0.5}}], "seed": 1,
    }}}}}  # fmt: skip
    (tmp_path / "dvc.lock").write_text(yaml.safe_dump(lock))
    checked = []
    monkeypatch.setattr(check_params, "check_model", lambda params: checked.append("model") or [])
    monkeypatch.setattr(check_params, "check_transforms", lambda key, spec: checked.append(key) or [])
    check(write(tmp_path, text))
    assert checked == []
    check(write(tmp_path, text.replace("img_size: 8", "img_size: 16").replace("0.5", "0.25")))
    assert checked == ["model", "augment"]
