"""`devices: 2` on the CPU: the train stage relaunches itself under torchrun (Gloo) and completes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from kagglecv.paths import Paths
from kagglecv.stages import split
from tests.conftest import REPO


@pytest.mark.slow
def test_two_processes_train_every_fold(digits_raw, tmp_path, tiny_params):
    raw = tmp_path / "data" / "raw"
    raw.parent.mkdir()
    os.symlink(digits_raw, raw)
    split.run(tiny_params, Paths(tmp_path))
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params.update(n_folds=2, epochs=2, img_size=8, batch_size=32, patience=1, warmup_epochs=0, devices=2)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    done = subprocess.run([sys.executable, "-m", "kagglecv.stages.train"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "x2 processes" in done.stderr
    summary = json.loads((tmp_path / "metrics" / "train_folds.json").read_text())["train"]
    assert set(summary["folds"]) == {"0", "1"}
    assert all(fold["valid_accuracy"] > 0.3 for fold in summary["folds"].values())
    assert sorted(p.name for p in (tmp_path / "models").glob("*.pt")) == ["fold0.pt", "fold1.pt"]
    assert not any(Path(tmp_path / ".kagglecv" / "resume").glob("*/*.pt"))
