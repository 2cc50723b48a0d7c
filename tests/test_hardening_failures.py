"""Training failures, crashes while writing, unsafe archives and credentials: exit 1 with the fix named,
and the previous artifacts exactly as they were."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pandas as pd
import pytest
import requests
import torch
from kaggle.api.kaggle_api_extended import KaggleApi

from kagglecv.artifacts import write_csv
from kagglecv.runtime import OUT_OF_MEMORY
from kagglecv.stages import download, predict, train
from tests.conftest import REPO
from tests.hardening_fixtures import (
    run_main,
    snapshot,
    trained_project_fixtures,
    write_params,
)

OOM = "CUDA out of memory. Tried to allocate 20.00 GiB (GPU 0; 15.77 GiB total capacity)"


trained, project = trained_project_fixtures()  # a clean competition's whole pipeline, run once; a copy per test


@pytest.mark.parametrize(
    ("model", "batch_size", "message"),
    [
        ("kcv_cnn", 2, "error: the loss became nan at step 1"),  # the training loss
        ("softmax_regression", 4, "error: the validation loss became nan in epoch 1"),  # only the held-out fold's
    ],
)
def test_nan_loss_stops_train_naming_lr_and_keeps_every_artifact(
    project: Path, capsys: pytest.CaptureFixture, model: str, batch_size: int, message: str
) -> None:
    before = snapshot(project)
    write_params(project, lr=1.0e30 if model == "kcv_cnn" else 1.0e37, model=model, batch_size=batch_size)
    code, err = run_main(train, project, capsys)
    assert code == 1
    assert err.startswith(message) and "lower lr" in err and "amp: off" in err and err.count("\n") == 1, err
    assert snapshot(project) == before


@pytest.mark.parametrize(("stage", "target"), [(train, "train_fold"), (predict, "predict_test")])
def test_out_of_gpu_memory_names_batch_size_img_size_and_amp(
    project: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch, stage: object, target: str
) -> None:
    def out_of_memory(*args: object, **kwargs: object) -> None:
        raise torch.OutOfMemoryError(OOM)

    monkeypatch.setattr(stage, target, out_of_memory)
    before = snapshot(project)
    code, err = run_main(stage, project, capsys)
    assert code == 1
    assert err == f"error: out of GPU memory: lower batch_size or img_size, or set amp: on ({OOM})\n"
    assert snapshot(project) == before


def test_torch_cuda_out_of_memory_is_the_same_failure() -> None:
    assert issubclass(torch.cuda.OutOfMemoryError, OUT_OF_MEMORY)


CRASH = """
import os, sys
from pathlib import Path
import pandas as pd
from kagglecv.artifacts import write_checkpoint, write_csv, write_json

target, how, writer = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
if how == "before_rename":  # everything written, the process dies just before the rename
    os.replace = lambda *a: os._exit(3)
else:  # the process dies half way through writing the temporary file
    real_write = Path.write_bytes
    def half(path, data):
        real_write(path, data[: len(data) // 2])
        os._exit(3)
    Path.write_bytes = half
    pd.DataFrame.to_csv = lambda self, path, **kw: half(Path(path), self.to_string().encode())
    import torch
    torch.save = lambda obj, path: half(Path(path), b"x" * 1000)
    Path.write_text = lambda path, text: half(path, text.encode())
big = pd.DataFrame({"id": range(5000), "p": 0.5})
{"csv": lambda: write_csv(target, big), "json": lambda: write_json(target, {"cv": list(range(5000))}),
 "checkpoint": lambda: write_checkpoint(target, {"w": list(range(5000))})}[writer]()
"""


@pytest.mark.slow  # another process of the stack
@pytest.mark.parametrize(
    ("how", "writer"),
    [("mid_write", "csv"), ("mid_write", "json"), ("mid_write", "checkpoint"), ("before_rename", "csv")],
)
def test_a_crash_while_writing_leaves_the_old_file_whole(tmp_path: Path, how: str, writer: str) -> None:
    target = tmp_path / "artifacts" / f"out.{writer}"
    target.parent.mkdir()
    target.write_bytes(b"the previous artifact\n")
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    done = subprocess.run(
        [sys.executable, "-c", CRASH, str(target), how, writer], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 3, done.stderr  # it did crash, mid-way
    assert target.read_bytes() == b"the previous artifact\n"


def test_an_error_while_writing_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "oof.csv"
    write_csv(target, pd.DataFrame({"id": ["a"], "p": [1.0]}))
    old = target.read_bytes()
    with pytest.raises(TypeError):
        write_csv(target, pd.DataFrame({"id": ["b"]}), no_such_argument=1)
    assert target.read_bytes() == old
    assert [p.name for p in tmp_path.iterdir()] == ["oof.csv"]


def test_stages_write_artifacts_only_through_the_atomic_writers() -> None:
    """folds, checkpoints, out-of-fold and test probabilities, metrics and submission: all via kagglecv.artifacts."""
    direct = (".to_csv(", "torch.save(", ".write_text(", ".write_bytes(", "json.dump(", "np.save(", '"w"', "'w'")
    for name in ("split", "train", "evaluate", "predict"):
        source = (REPO / f"src/kagglecv/stages/{name}.py").read_text()
        assert not [d for d in direct if d in source], name
        assert "from kagglecv.artifacts import" in source, name


def zip_with(path: Path, entry: str, *, symlink: bool = False) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("train.csv", "label,pixel0\n1,0\n")
        info = zipfile.ZipInfo(entry)
        if symlink:
            info.external_attr = 0o120777 << 16  # a symbolic link's mode
        zf.writestr(info, "/etc/passwd" if symlink else "owned")
    return path


@pytest.mark.parametrize(
    ("entry", "symlink", "message"),
    [
        ("../evil.txt", False, "entry '../evil.txt' would land outside"),
        ("train/../../evil.txt", False, "entry 'train/../../evil.txt' would land outside"),
        ("/tmp/evil.txt", False, "entry '/tmp/evil.txt' would land outside"),
        ("link", True, "entry 'link' is a symbolic link"),
    ],
)
def test_download_refuses_a_zip_escaping_its_folder(
    project: Path, capsys: pytest.CaptureFixture, entry: str, symlink: bool, message: str
) -> None:
    archive = zip_with(project.parent / "competition.zip", entry, symlink=symlink)
    write_params(project, data={"source": "local", "path": str(archive)})
    raw_before = {p: p.read_bytes() for p in (project / "data/raw").rglob("*") if p.is_file()}
    code, err = run_main(download, project, capsys)
    assert code == 1 and message in err and "refusing" in err and str(archive) in err
    assert {p: p.read_bytes() for p in (project / "data/raw").rglob("*") if p.is_file()} == raw_before
    assert not list(project.parent.rglob("evil.txt")) and not Path("/tmp/evil.txt").exists()
    assert sorted(p.name for p in (project / "data").iterdir() if p.name.startswith(".")) == []  # no leftovers


SECRET = "0123456789abcdef-not-a-real-key"


@pytest.mark.parametrize(
    "failure",
    [
        requests.HTTPError(f"401 Client Error for url https://someone:{SECRET}@www.kaggle.com/api/v1"),
        requests.ConnectionError(f"Max retries exceeded (key={SECRET})"),
    ],
)
def test_kaggle_credentials_are_never_printed_or_logged(
    project: Path, capsys: pytest.CaptureFixture, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch,
    failure: Exception,
) -> None:  # fmt: skip
    monkeypatch.setenv("KAGGLE_USERNAME", "someone")
    monkeypatch.setenv("KAGGLE_KEY", SECRET)
    if isinstance(failure, requests.HTTPError):
        failure.response = requests.Response()
        failure.response.status_code = 401

    def fail(*args: object, **kwargs: object) -> None:
        raise failure

    # the client library prints set-up help while authenticating; kagglecv swallows that output
    monkeypatch.setattr(KaggleApi, "authenticate", lambda self: print(f"using key {SECRET}"))
    monkeypatch.setattr(KaggleApi, "competition_download_files", fail)
    write_params(project, data={"source": "kaggle", "competition": "digit-recognizer"})
    code, err = run_main(download, project, capsys)
    out = capsys.readouterr()
    assert code == 1 and "Kaggle" in err
    for text in (err, out.out, out.err, caplog.text):
        assert SECRET not in text
    written = [p for p in project.rglob("*") if p.is_file() and p.suffix in (".csv", ".json", ".yaml", ".txt")]
    assert not [p for p in written if SECRET in p.read_text(errors="ignore")]


@pytest.mark.parametrize("path", ["kaggle.json", ".env", ".kaggle/kaggle.json", "data/raw/kaggle.json", "src/.env"])
def test_credentials_files_are_ignored_by_git(path: str) -> None:
    done = subprocess.run(["git", "check-ignore", "--no-index", "-q", path], cwd=REPO, capture_output=True)
    if done.returncode == 128:
        pytest.skip("not a git checkout")
    assert done.returncode == 0, f"{path} is not ignored by .gitignore"


def test_a_corrupt_checkpoint_names_the_file_and_the_fix(tmp_path: Path) -> None:
    from kagglecv.data import CompetitionError
    from kagglecv.stages.predict import read_checkpoints

    (tmp_path / "fold0.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CompetitionError, match=r"fold0\.pt is not a readable checkpoint .*dvc repro -f train"):
        read_checkpoints(tmp_path)
