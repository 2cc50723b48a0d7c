"""`python -m kagglecv.bench_precision`: time per epoch and accuracy of each precision setting.

Every setting (float32, bfloat16, float16 with a GradScaler, channels_last, torch.compile) runs
the real pipeline on the default competition in its own temporary copy of the project: one
`dvc repro` gives its accuracy (cv.accuracy, cv.log_loss, the leaderboard score), then its train
stage runs `--repeats` more times with `--timed-epochs` epochs, interleaved with the other
settings in rotated order, so load on a shared machine hits all alike. Each time is a median.
Writes `benchmarks/precision.json` (`precision-gpu.json` on a GPU) and the matching section of
BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
import yaml

from kagglecv.artifacts import write_json
from kagglecv.bench_timing import REPORT, machine_description, replace_section
from kagglecv.engine import select_precision
from kagglecv.runtime import main_of
from kagglecv.workspace import copy_project, override_params

SETTINGS: dict[str, dict] = {
    "float32": {"amp": "off"},
    "bfloat16": {"amp": "bf16"},
    "float16": {"amp": "fp16"},
    "float32+channels_last": {"amp": "off", "channels_last": True},
    "bfloat16+channels_last": {"amp": "bf16", "channels_last": True},
    "bfloat16+compile": {"amp": "bf16", "compile": True},
}
DEFAULT_SETTINGS = {
    "cpu": ["float32", "bfloat16", "float16", "float32+channels_last"],
    "cuda": ["float32", "bfloat16", "float16", "bfloat16+channels_last", "bfloat16+compile"],
}
RESULTS = Path("benchmarks/precision.json")


def _stage(root: Path, env: dict, *cmd: str) -> None:
    done = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"`{' '.join(cmd)}` failed in {root.name}:\n{done.stderr[-2000:]}")


def _read(root: Path, name: str, file: str | None = None) -> dict:
    """Section `name` of metrics/<file or name>.json."""
    return json.loads((root / "metrics" / f"{file or name}.json").read_text())[name]


def _epoch_times(root: Path) -> tuple[float, float]:
    """(seconds per training epoch, median images/s) of the last train stage run in `root`."""
    folds = _read(root, "train", "train_folds")["folds"].values()
    seconds = sum(f["seconds"] for f in folds) / sum(f["epochs_run"] for f in folds)
    return seconds, statistics.median(f["images_per_s"] for f in folds)


def run(
    settings: list[str], *, device: str, overrides: dict | None = None, repeats: int = 3, timed_epochs: int = 2,
    project: Path | None = None,
) -> dict:  # fmt: skip
    """Measure each of `settings` (keys of SETTINGS) on `device` in copies of `project` (default: here)."""
    unknown = [s for s in settings if s not in SETTINGS]
    if unknown:
        raise ValueError(f"unknown setting(s) {', '.join(unknown)}; choose from {', '.join(SETTINGS)}")
    env = {**os.environ, **({"CUDA_VISIBLE_DEVICES": ""} if device == "cpu" else {})}
    rows: dict[str, dict] = {}
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in settings}
    with tempfile.TemporaryDirectory() as tmp:
        roots = {name: Path(tmp) / name.replace("+", "_") for name in settings}
        envs = {name: {**env, "PYTHONPATH": str(root / "src")} for name, root in roots.items()}
        for name, root in roots.items():
            copy_project(project or Path.cwd(), root, {**(overrides or {}), **SETTINGS[name]})
            _stage(root, envs[name], "dvc", "repro", "-q")
            cv, train = _read(root, "cv"), _read(root, "train", "train_folds")
            rows[name] = {
                **SETTINGS[name], "cv_accuracy": cv["accuracy"], "cv_log_loss": cv["log_loss"],
                "leaderboard": _read(root, "leaderboard"), "train_stage_s": train["seconds"],
                "epochs_run": sum(f["epochs_run"] for f in train["folds"].values()),
            }  # fmt: skip
            override_params(root, {"epochs": timed_epochs})
        for r in range(repeats):
            order = settings[r % len(settings) :] + settings[: r % len(settings)]
            for name in order:
                _stage(roots[name], envs[name], sys.executable, "-m", "kagglecv.stages.train")
                times[name].append(_epoch_times(roots[name]))
    base = times.get("float32")
    for name in settings:
        seconds = [s for s, _ in times[name]]
        rows[name]["epoch_s"] = round(statistics.median(seconds), 3)
        rows[name]["images_per_s"] = round(statistics.median(ips for _, ips in times[name]), 1)
        # Side by side: each repetition's float32 time over this setting's, then the median.
        speed = statistics.median(b / s for (b, _), s in zip(base, seconds)) if base else None
        rows[name]["speed_vs_float32"] = None if speed is None else round(speed, 2)
    precision = select_precision("off", device)
    return {
        "settings": rows,
        "workload": {**(overrides or {}), "repeats": repeats, "timed_epochs": timed_epochs},
        "machine": machine_description(precision),
    }


def format_section(r: dict) -> str:
    m, w = r["machine"], r["workload"]
    overrides = ", ".join(f"{k}={v}" for k, v in w.items() if k not in ("repeats", "timed_epochs"))
    lines = [
        f"## Precision on {m['device']} ({m['cpu']}, {m['cores']} cores), {m['date']}\n",
        f"torch {m['torch']}; the default competition and params.yaml" + (f" with {overrides}" if overrides else "")
        + f"; accuracy from one full `dvc repro` per setting, time per training epoch the median of {w['repeats']}"
        f" interleaved train-stage runs of {w['timed_epochs']} epochs per fold.\n",
        "| setting | epoch (s) | images/s | speed vs float32 | cv.accuracy | cv.log_loss | leaderboard "
        "| full train stage (s) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, row in r["settings"].items():
        board = ", ".join(f"{k} {v:.4f}" for k, v in row["leaderboard"].items())
        lines.append(
            f"| {name} | {row['epoch_s']} | {row['images_per_s']} | {row['speed_vs_float32'] or '-'} | "
            f"{row['cv_accuracy']:.4f} | {row['cv_log_loss']:.4f} | {board} | {row['train_stage_s']} |"
        )
    return "\n".join(lines) + "\n\n"


def write_report(results: dict, results_path: Path = RESULTS, report_path: Path = REPORT) -> Path:
    """Write the JSON (`precision-gpu.json` on a GPU) and this device's report section; return the JSON's path."""
    gpu = results["machine"]["device"] != "cpu"
    path = results_path.with_name("precision-gpu.json") if gpu else results_path
    write_json(path, results)
    replace_section(report_path, f"bench:precision-{'gpu' if gpu else 'cpu'}", format_section(results))
    return path


def _main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cpu", "cuda"])
    parser.add_argument("--settings", default=None, help=f"comma-separated, from {', '.join(SETTINGS)}")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--timed-epochs", type=int, default=2, help="epochs per fold in each timed run")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a params.yaml override")
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args()
    settings = args.settings.split(",") if args.settings else DEFAULT_SETTINGS[args.device]
    overrides = {k: yaml.safe_load(v) for k, _, v in (s.partition("=") for s in args.set)}
    results = run(settings, device=args.device, overrides=overrides, repeats=args.repeats,
                  timed_epochs=args.timed_epochs)  # fmt: skip
    print(format_section(results))
    if not args.no_write:
        print(f"wrote {write_report(results)} and {REPORT}")


main = main_of(_main, RuntimeError, ValueError)  # a failed stage or an unknown setting: one error line

if __name__ == "__main__":
    main()
