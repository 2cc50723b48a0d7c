"""The precision benchmark runs the real pipeline per setting and reports what it measured."""

import json

import pytest

from kagglecv import bench_precision
from tests.conftest import REPO


@pytest.fixture(scope="module")
def results():
    return bench_precision.run(["float32", "float16"], device="cpu", repeats=1, timed_epochs=1, project=REPO,
                               overrides={"n_folds": 2, "epochs": 1, "img_size": 8})  # fmt: skip


@pytest.mark.slow  # dvc repro per setting
def test_each_setting_has_accuracy_from_its_own_pipeline_and_a_time(results):
    rows = results["settings"]
    assert list(rows) == ["float32", "float16"]
    assert rows["float16"]["amp"] == "fp16" and rows["float32"]["amp"] == "off"
    for row in rows.values():
        assert row["cv_log_loss"] > 0 and set(row["leaderboard"]) == {"accuracy"}  # one epoch: figures, not accuracy
        assert row["epoch_s"] > 0 and row["images_per_s"] > 0
        assert row["epochs_run"] == 2  # 2 folds x 1 epoch in the accuracy run
    ratio = rows["float32"]["epoch_s"] / rows["float16"]["epoch_s"]  # one repeat: the median is that ratio
    assert rows["float16"]["speed_vs_float32"] == pytest.approx(ratio, abs=0.01)
    assert results["workload"]["timed_epochs"] == 1 and results["machine"]["device"] == "cpu"


@pytest.mark.slow
def test_report_gets_a_precision_section_per_device(results, tmp_path):
    report = tmp_path / "BENCHMARKS.md"
    report.write_text("# Benchmarks\n\n<!-- bench:cpu -->\nthroughput\n<!-- bench:cpu -->\n")
    bench_precision.write_report(results, tmp_path / "precision.json", report)
    bench_precision.write_report(results, tmp_path / "precision.json", report)  # replaced, not appended
    text = report.read_text()
    assert text.count("<!-- bench:precision-cpu -->") == 2 and "throughput" in text
    row = results["settings"]["float16"]
    assert f"| float16 | {row['epoch_s']} | {row['images_per_s']} |" in text
    assert json.loads((tmp_path / "precision.json").read_text())["settings"]["float16"]["epoch_s"] == row["epoch_s"]


def test_unknown_setting_is_named():
    with pytest.raises(ValueError, match=r"unknown setting\(s\) float8; choose from float32, bfloat16"):
        bench_precision.run(["float8"], device="cpu")
