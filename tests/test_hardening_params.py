"""A bad params.yaml: every problem in one message naming the key and what is allowed; exit 1; nothing written."""

from __future__ import annotations

from pathlib import Path

import pytest

from kagglecv.fold_training import check_names
from kagglecv.params import ParamsError, load_params
from kagglecv.stages import train
from tests.conftest import REPO
from tests.hardening_fixtures import make_project, run_main, run_pipeline, run_stage_process, snapshot

BAD = """\
lrr: 0.1
lr: 3e-4
n_folds: 1
img_size: 0
patience: -1
model: resnet1
data:
  bad_images: skipp
augment:
  - Afine: {p: 1.0}
  - HorizontalFlip: {q: 0.5}
  - Affine: {translate_px: {x: [-2, 2]}, p: 1.0}
"""


@pytest.mark.slow  # another process of the stack
def test_every_problem_is_named_at_once_and_the_stage_exits_1(tmp_path: Path) -> None:
    project = make_project(tmp_path)
    run_pipeline(project)
    before = snapshot(project)
    (project / "params.yaml").write_text(BAD)
    done = run_stage_process(project, "split")
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    message = done.stderr
    assert message.startswith("error: params.yaml has 6 problem(s):")  # the loader's: keys, types, ranges
    for line in (
        "lrr: unknown key (did you mean lr?)",
        "lr: expected a number, got '3e-4' (YAML reads '3e-4' as text: write it with a dot, 3.0e-4)",
        "n_folds: 1 is too small; it must be at least 2",
        "img_size: 0 is too small; it must be at least 1",
        "patience: -1 is too small; it must be at least 0",
        "data.bad_images: 'skipp' is not allowed (did you mean skip?); choose one of skip, stop",
    ):
        assert f"  - {line}" in message, line
    assert snapshot(project) == before


def test_train_names_every_model_and_transform_it_cannot_build_before_reading_data(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    project = make_project(tmp_path)
    (project / "params.yaml").write_text(BAD.split("model:")[0].replace("lrr: 0.1\nlr: 3e-4\nn_folds: 1\nimg_size: 0\npatience: -1\n", "")
                                         + "model: resnet1\n" + "augment:" + BAD.split("augment:")[1])
    code, message = run_main(train, project, capsys)
    assert code == 1 and message.startswith("error: params.yaml has 3 problem(s):"), message
    for line in (
        "model: unknown model 'resnet1'; closest names in timm's registry: resnet18",
        "augment[0]: albumentations has no transform 'Afine'; closest: Affine",
        "augment[1].HorizontalFlip: no argument 'q'; closest: p",
    ):
        assert f"  - {line}" in message, line
    assert "augment[2]" not in message  # the valid entry
    assert not (project / "data/folds.csv").exists() and not (project / "data/cache").exists()


def test_lr_must_be_positive_and_our_models_are_known(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    path.write_text("lr: 0.0\nmodel: kcv_cnn\n")
    with pytest.raises(ParamsError, match=r"lr: 0.0 is too small; it must be greater than 0.0") as err:
        load_params(path)
    assert "model" not in str(err.value)
    path.write_text("model: softmax_regresion\n")
    with pytest.raises(ParamsError, match=r"model: unknown model 'softmax_regresion'; closest .*softmax_regression"):
        check_names(load_params(path))
    check_names(load_params(REPO / "params.yaml"))  # kcv_cnn, and the shipped augment, are known


def test_repository_params_carry_the_hardening_keys() -> None:
    params = load_params(REPO / "params.yaml")
    assert params.deterministic is False and params.data.bad_images == "skip"


def test_train_main_names_a_bad_key_without_touching_outputs(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    project = make_project(tmp_path)
    run_pipeline(project)
    before = snapshot(project)
    (project / "params.yaml").write_text("n_folds: 2\nepochs: 1\nbatch_sise: 4\n")
    code, err = run_main(train, project, capsys)
    assert code == 1 and "batch_sise: unknown key (did you mean batch_size" in err
    assert snapshot(project) == before
