"""The learning-rate range test on tiny data: a positive, finite suggestion, the plot, the curve's length."""

from __future__ import annotations

import dataclasses
import math
import shutil
from pathlib import Path

import pytest
import yaml
from PIL import Image

from kagglecv import lr_find
from kagglecv.lr_find import format_lr, lr_steps, report
from kagglecv.params import load_params
from kagglecv.paths import Paths
from kagglecv.stages import split
from tests.conftest import REPO, shipped, with_raw

PARAMS = shipped(n_folds=2, model="softmax_regression", img_size=8, batch_size=32, augment=[])


@pytest.fixture(scope="module")
def split_paths(digits_raw: Path, tmp_path_factory: pytest.TempPathFactory) -> Paths:
    """The digits, split; every test writes its plot to the same layout (the plot is all lr_find writes)."""
    paths = with_raw(Paths(tmp_path_factory.mktemp("split")), digits_raw)
    split.run(PARAMS, paths)
    return paths


def test_a_sweep_that_never_diverges_takes_every_step_and_suggests_a_positive_finite_lr(split_paths):
    plot = split_paths.lr_find_plot
    result = lr_find.run(PARAMS, split_paths, steps=30, start_lr=1e-5, end_lr=1e-1)
    assert not result.diverged
    assert len(result.lrs) == len(result.losses) == len(result.smoothed) == 30
    assert result.lrs[0] == pytest.approx(1e-5) and result.lrs[-1] == pytest.approx(1e-1)
    assert all(b > a for a, b in zip(result.lrs, result.lrs[1:]))  # exponential: equal ratios
    assert result.lrs[1] / result.lrs[0] == pytest.approx(result.lrs[-1] / result.lrs[-2])
    assert math.isfinite(result.suggested) and 1e-6 <= result.suggested <= 1e-2  # a tenth of an lr it tried
    assert result.smoothed[-1] < result.smoothed[0]  # softmax regression learns at lr 0.1
    with Image.open(plot) as image:
        assert (image.format, image.size) == ("PNG", (640, 400))


def test_a_diverging_sweep_stops_and_suggests_below_where_it_blew_up(split_paths):
    result = lr_find.run(PARAMS, split_paths, steps=60, start_lr=1e-4, end_lr=1e6)
    assert result.diverged and 3 <= len(result.losses) < 60
    assert result.smoothed[-1] > 4 * min(result.smoothed) or not math.isfinite(result.losses[-1])
    assert result.suggested < result.lrs[-1] / 10 and result.steepest <= result.lrs[-1]


def test_lr_steps_grow_exponentially_between_the_ends():
    lrs = lr_steps(1e-7, 10.0, 9)
    assert lrs.tolist() == pytest.approx([10.0**e for e in range(-7, 2)])


@pytest.mark.parametrize(("lr", "text"), [(0.0032, "3.2e-3"), (3e-3, "3.0e-3"), (0.0099, "9.9e-3"), (0.00996, "1.0e-2"),
                                          (1.0, "1.0e+0"), (12.5, "1.2e+1")])  # fmt: skip
def test_the_suggested_lr_is_written_so_yaml_and_dvc_read_a_float(tmp_path, lr, text):
    from dvc.utils.hydra import apply_overrides  # what `dvc exp run -S lr=...` runs

    assert format_lr(lr) == text
    value = yaml.safe_load(f"lr: {text}")["lr"]
    assert isinstance(value, float) and value == pytest.approx(lr, rel=0.05)
    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    apply_overrides(tmp_path / "params.yaml", [f"lr={text}"])
    assert load_params(tmp_path / "params.yaml").lr == pytest.approx(float(text))


def test_the_report_ends_with_the_exact_command_to_run():
    result = lr_find.LrFind(lrs=[1e-4, 1e-3, 1e-2], losses=[2.3, 1.0, 9.0], smoothed=[2.3, 1.2, 5.0], diverged=True,
                            suggested=1e-4, steepest=1e-3)  # fmt: skip
    lines = report(result, Path("plots/lr_find.png")).splitlines()
    assert lines[0] == "lr_find: 3 steps on fold 0 from lr 1.0e-4; the loss diverged at lr 1.0e-2"
    assert lines[-1] == "dvc exp run -S lr=1.0e-4"


def test_the_shipped_img_size_auto_is_resolved_as_the_train_stage_resolves_it(split_paths):
    params = dataclasses.replace(PARAMS, img_size="auto", cache_size=0)  # 8x8 digits: auto gives 16 on a CPU
    result = lr_find.run(params, split_paths, steps=5, start_lr=1e-4, end_lr=1e-2)
    assert len(result.losses) == 5 and all(math.isfinite(loss) for loss in result.losses)
