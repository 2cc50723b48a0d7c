"""The benchmark measures what it says, on a workload small enough for the test suite."""

import dataclasses
import json

import pytest

from kagglecv import bench
from kagglecv.params import load_params
from tests.conftest import REPO


@pytest.fixture(scope="module")
def results():
    params = dataclasses.replace(load_params(REPO / "params.yaml"), batch_size=32)
    return bench.run(params, n_images=1000, repeats=1, steps=3, device="cpu", repro=False)


def test_results_carry_every_documented_figure(results):
    for key in ("train_images_per_s", "compute_limit_images_per_s", "naive_images_per_s", "predict_images_per_s"):
        assert results[key] > 0, key
    rounded = dict(rel=0.01, abs=0.006)  # the ratios are rounded to 2-3 decimals
    train = results["train_images_per_s"]
    assert results["efficiency"] == pytest.approx(train / results["compute_limit_images_per_s"], **rounded)
    assert results["speedup_vs_naive"] == pytest.approx(train / results["naive_images_per_s"], **rounded)
    assert 100 < results["peak_rss_mb"] < 24_000
    assert results["workload"]["shape"] == [28, 28, 1] and results["machine"]["device"] == "cpu"


def test_report_replaces_only_its_own_section(results, tmp_path):
    report = tmp_path / "BENCHMARKS.md"
    report.write_text("# Benchmarks\n\nintro\n\n<!-- bench:gpu -->\nGPU figures\n<!-- bench:gpu -->\n")
    bench.write_report(results, tmp_path / "results.json", report)
    bench.write_report(results, tmp_path / "results.json", report)  # a rerun replaces, never appends
    text = report.read_text()
    assert text.count("<!-- bench:cpu -->") == 2 and "GPU figures" in text and "intro" in text
    assert f"| `efficiency` | {results['efficiency']} |" in text
    assert json.loads((tmp_path / "results.json").read_text())["efficiency"] == results["efficiency"]


def test_naive_side_replays_the_configured_affine():
    spec = [{"Affine": {"translate_px": {"x": [-2, 2], "y": [-3, 3]}, "rotate": [-15, 15], "scale": [0.85, 1.15], "p": 1.0}}]
    assert bench.naive_affine_of(spec) == bench.NaiveAffine(3, 15.0, (0.85, 1.15))
    assert bench.naive_affine_of([{"Affine": {"translate_px": 2, "rotate": 10}}]) == bench.NaiveAffine(2, 10.0, None)
    assert bench.naive_affine_of([{"HorizontalFlip": {"p": 0.5}}]) == bench.NaiveAffine()


@pytest.mark.slow
def test_the_photo_workload_reports_decoding_training_and_memory(tmp_path):
    from kagglecv import bench_photo

    params = dataclasses.replace(load_params(REPO / "params.yaml"), batch_size=8)
    r = bench_photo.run(params, n_images=48, size=96, img_size=32, repeats=1, steps=2, device="cpu")
    for key in ("decode_images_per_s", "decode_one_core_images_per_s", "train_images_per_s", "compute_limit_images_per_s"):
        assert r[key] > 0, key
    assert r["decode_speedup"] == pytest.approx(r["decode_images_per_s"] / r["decode_one_core_images_per_s"], rel=0.02)
    assert 0 < r["peak_rss_anon_mb"] <= r["peak_rss_mb"]
    assert r["workload"]["img_size"] == 32 and r["workload"]["decoded_mb"] == pytest.approx(48 * 32 * 32 * 3 / 2**20, abs=0.1)
    path = bench_photo.write_report(r, tmp_path / "photo.json", tmp_path / "BENCHMARKS.md")
    assert json.loads(path.read_text())["decode_speedup"] == r["decode_speedup"]
    assert "<!-- bench:photo-cpu -->" in (tmp_path / "BENCHMARKS.md").read_text()
