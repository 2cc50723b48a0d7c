"""`devices: 2` on the CPU: the train stage relaunches itself under torchrun (Gloo) and completes."""

from __future__ import annotations

import json
import os
import socket
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


@pytest.mark.slow
def test_two_nodes_on_the_loopback_interface_train_as_one_machine_with_two_processes(digits_raw, tmp_path, tiny_params):
    """torchrun across machines, as README.md shows it, with both "nodes" on this one: rank 0 alone
    writes, and the files are those of `devices: 2` on one machine (the same two-process world)."""
    runs = {}
    for name in ("one_machine", "two_nodes"):
        root = tmp_path / name
        (root / "data").mkdir(parents=True)
        os.symlink(digits_raw, root / "data" / "raw")
        split.run(tiny_params, Paths(root))
        params = yaml.safe_load((REPO / "params.yaml").read_text())
        params.update(n_folds=2, epochs=2, img_size=8, batch_size=32, patience=1, warmup_epochs=0,
                      devices=2 if name == "one_machine" else 1)  # fmt: skip
        (root / "params.yaml").write_text(yaml.safe_dump(params))
        # One thread per process in both worlds (torchrun sets it for --nproc-per-node above 1 only): CPU
        # results depend on the thread count.
        env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "GLOO_SOCKET_IFNAME": "lo", "OMP_NUM_THREADS": "1"}
        train = [sys.executable, "-m", "kagglecv.stages.train"]
        if name == "one_machine":
            nodes = [subprocess.Popen(train, cwd=root, env=env, stderr=subprocess.PIPE, text=True)]
        else:
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
            torchrun = [sys.executable, "-m", "torch.distributed.run", "--nnodes=2", "--nproc-per-node=1",
                        "--master-addr=127.0.0.1", f"--master-port={port}"]  # fmt: skip
            nodes = [subprocess.Popen([*torchrun, f"--node-rank={rank}", *train[1:]], cwd=root, env=env,
                                      stderr=subprocess.PIPE, text=True) for rank in (0, 1)]  # fmt: skip
        logs = [node.communicate(timeout=600)[1] for node in nodes]
        assert all(node.returncode == 0 for node in nodes), "\n".join(log[-3000:] for log in logs)
        assert "x2 processes" in logs[0]  # node 0 holds rank 0, the one that logs and writes
        runs[name] = root
    a, b = runs["one_machine"], runs["two_nodes"]
    assert (a / "predictions/oof.csv").read_bytes() == (b / "predictions/oof.csv").read_bytes()
    assert sorted(p.name for p in (b / "models").glob("*.pt")) == ["fold0.pt", "fold1.pt"]
    assert sorted(p.name for p in (b / "dvclive").iterdir()) == ["fold0", "fold1"]
