"""Under the real `dvc exp run`, a parameter error stops at check_params, before DVC removes train's outputs."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import make_project
from tests.hardening_fixtures import snapshot
from tests.test_dvc_repro import TINY, sh
from tests.test_hardening_dvc import dvc_fails

TRAINED = ("models/fold0.pt", "models/fold1.pt", "predictions/oof.csv", "submissions/submission.csv")


@pytest.mark.slow
def test_a_bad_model_size_or_view_leaves_the_last_good_models_in_place(tmp_path: Path) -> None:
    project = make_project(tmp_path / "project", TINY)
    sh(project, "dvc", "repro")
    good = snapshot(project, TRAINED)
    assert set(good) == set(TRAINED)
    sh(project, "git", "add", "-A")
    sh(project, "git", "commit", "-qm", "baseline")
    for setting, message in [
        ("img_size=2", "img_size: 2 is too small for model kcv_cnn; the smallest it accepts is 4"),
        ("tta=[bogus]", "tta[0]: unknown view 'bogus'"),
        ("model=does_not_exist", "model: unknown model 'does_not_exist'"),
    ]:
        out = dvc_fails(project, "exp", "run", "-S", setting)
        assert message in out and "failed to reproduce 'check_params'" in out
        assert snapshot(project, TRAINED) == good, setting
