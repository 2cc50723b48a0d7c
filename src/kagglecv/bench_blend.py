"""`python -m kagglecv.bench_blend`: three experiments, their blend and a pseudo-labelling round on real MNIST.

The competition is `bench_layouts`' Digit Recognizer: 4,000 training and 1,000 hidden test digits of
real MNIST (`pip install -e ".[bench]"`), 28x28 grey pixel rows, `solution.csv` scoring each
submission as the leaderboard would. In a temporary copy of the project: `dvc repro` with the
shipped params (committed and tagged `default`), then `dvc exp run` of two cheap variations (a
second seed, `-S seeds=[7]`, on the same folds; and `-S model=mlp`), then
`python -m kagglecv.blend default seed7 mlp`, and a pseudo-labelling round (`dvc exp run -S
pseudo_label.source=default`: the default recipe with the test digits `default` predicted at
`pseudo_label.threshold` or above added to every fold's training part). Also checks that a member
made on other folds (`-S seed=1`) is refused and nothing written. Writes `benchmarks/blend.json`
and a BENCHMARKS.md section.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import yaml

from kagglecv.artifacts import write_json
from kagglecv.bench_layouts import write_mnist_competition
from kagglecv.bench_timing import REPORT, machine_description, replace_section
from kagglecv.engine import select_precision
from kagglecv.workspace import copy_project

RESULTS = Path("benchmarks/blend.json")
EXPERIMENTS = {  # name -> dvc exp run -S settings (every varied key restated: the workspace keeps the last run's)
    "seed7": ["seeds=[7]", "model=kcv_cnn", "pseudo_label.source="],
    "mlp": ["seeds=1", "model=mlp", "pseudo_label.source="],
    "pseudo": ["seeds=1", "model=kcv_cnn", "pseudo_label.source=default"],
}


def sh(project: Path, *args: str) -> str:
    env = {**os.environ, "PYTHONPATH": str(project / "src"), "DVC_NO_ANALYTICS": "1", "GIT_AUTHOR_NAME": "kagglecv",
           "GIT_AUTHOR_EMAIL": "kagglecv@localhost", "GIT_COMMITTER_NAME": "kagglecv",
           "GIT_COMMITTER_EMAIL": "kagglecv@localhost"}  # fmt: skip
    done = subprocess.run(args, cwd=project, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return done.stdout + done.stderr


def scores(project: Path) -> dict:
    read = lambda name: json.loads((project / "metrics" / name).read_text())  # noqa: E731
    train = read("train.json")["train"]
    return {"cv": read("cv.json")["cv"], "leaderboard": read("leaderboard.json")["leaderboard"],
            "minutes": train["minutes"], **({"pseudo_labels": train["pseudo_labels"]} if "pseudo_labels" in train else {})}  # fmt: skip


def run_bench(work: Path, repo: Path, overrides: dict, *, mnist: bool = True) -> dict:
    """The experiments, the blend and the refusal in a copy of the project under `work`; their figures
    (`mnist` False: on the embedded digits)."""
    project = work / "project"
    if mnist:
        raw = write_mnist_competition(work / "competition", "pixel_csv")
        data = {**yaml.safe_load((repo / "params.yaml").read_text())["data"], "source": "local", "path": str(raw)}
        overrides = {**overrides, "data": data}
    copy_project(repo, project, overrides)
    start = time.perf_counter()
    sh(project, "dvc", "repro", "-q")
    runs = {"default": {**scores(project), "seconds": round(time.perf_counter() - start, 1)}}
    sh(project, "git", "add", "-A")
    sh(project, "git", "commit", "-qm", "default recipe")
    sh(project, "git", "tag", "default")
    for name, settings in EXPERIMENTS.items():
        start = time.perf_counter()
        sh(project, "dvc", "exp", "run", "-q", "-n", name, *[a for s in settings for a in ("-S", s)])
        runs[name] = {**scores(project), "seconds": round(time.perf_counter() - start, 1)}
        print(json.dumps({name: runs[name]}), flush=True)
    blend = blend_figures(project)
    return {"runs": runs, "blend": blend, "refusal": check_refusal(project)}


def blend_figures(project: Path) -> dict:
    """`python -m kagglecv.blend default seed7 mlp` (`--method auto`): metrics/blend.json and its seconds."""
    start = time.perf_counter()
    sh(project, "python", "-m", "kagglecv.blend", "default", "seed7", "mlp")
    blend = json.loads((project / "metrics/blend.json").read_text())["blend"]
    blend["seconds"] = round(time.perf_counter() - start, 1)
    print(json.dumps({"blend": blend}), flush=True)
    return blend


def check_refusal(project: Path) -> str:
    """A member made on other folds (`seed=1` splits differently): the blend stops and writes nothing."""
    (project / "metrics/blend.json").unlink()
    sh(project, "dvc", "exp", "run", "-q", "-n", "otherfolds", "-S", "seed=1", "-S", "epochs=1", "-S", "model=mlp",
       "-S", "pseudo_label.source=")  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(project / "src")}
    done = subprocess.run(["python", "-m", "kagglecv.blend", "default", "otherfolds"], cwd=project, env=env,
                          capture_output=True, text=True)  # fmt: skip
    if done.returncode != 1 or (project / "metrics/blend.json").exists():
        raise SystemExit(f"the blend of other folds was not refused:\n{done.stdout}\n{done.stderr}")
    return done.stderr.strip().splitlines()[-1]


def write_report(results: dict) -> None:
    runs, blend = results["runs"], results["blend"]
    lines = [f"| `{name}` | {r['cv']['accuracy']} | {r['cv']['log_loss']} | {r['leaderboard']['accuracy']} | "
             f"{r.get('pseudo_labels', '')} | {r['seconds']} |" for name, r in runs.items()]  # fmt: skip
    lines += [f"| blend, `--method {m}`{' (auto: chosen)' if m == blend['method'] else ''} | {b['cv']['accuracy']} | "
              f"{b['cv']['log_loss']} | {blend['leaderboard']['accuracy'] if m == blend['method'] else ''} | | |"
              for m, b in blend["methods"].items()]  # fmt: skip
    weights = ", ".join(f"{k} {v}" for k, v in blend["weights"].items())
    machine = results["machine"]
    replace_section(REPORT, "bench:blend", (
        f"## Ensembling on real MNIST, {machine['device']} ({machine['cpu']}, {machine['cores']} cores)\n\n"
        "4,000 training and 1,000 hidden test digits (Digit Recognizer). `default`: the shipped params"
        + "".join(f", `{k}: {v}`" for k, v in results["overrides"].items()) + "; "
        "`seed7`: `-S seeds=[7]`; `mlp`: `-S model=mlp`; `pseudo`: `-S pseudo_label.source=default`. "
        "The blend's cv figures come from weights fit out of fold; the submission's weights (fit on every "
        f"out-of-fold row): {weights}; the blend took {blend['seconds']} s.\n\n"
        "| run | cv.accuracy | cv.log_loss | hidden-test accuracy | pseudo-labels | seconds |\n"
        "| --- | --- | --- | --- | --- | --- |\n" + "\n".join(lines) + "\n\n"
        f"A member made on other folds: `{results['refusal']}`\n\n"
    ))  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="the embedded digits, 2 folds, 2 epochs: checks the run, writes nothing")
    parser.add_argument("--n-folds", type=int, help="n_folds for every run (default: params.yaml's)")
    parser.add_argument("--epochs", type=int, help="epochs for every run (default: params.yaml's)")
    parser.add_argument("--reblend", type=Path, help="a kept project of an earlier run: blend its experiments again")
    args = parser.parse_args()
    if args.reblend:  # the same experiments' artifacts, blended by this checkout's blend module
        shutil.copytree(Path("src"), args.reblend / "src", dirs_exist_ok=True)
        results = {**json.loads(RESULTS.read_text()), "blend": blend_figures(args.reblend)}
        write_json(RESULTS, results)
        write_report(results)
        return
    overrides = {k: v for k, v in (("n_folds", args.n_folds), ("epochs", args.epochs)) if v is not None}
    if args.tiny:
        overrides = {"n_folds": 2, "epochs": 2, "img_size": 8}
    with tempfile.TemporaryDirectory() as tmp:
        results = run_bench(Path(tmp), Path.cwd(), overrides, mnist=not args.tiny)
    results["overrides"] = overrides
    results["machine"] = machine_description(select_precision("auto"))
    print(json.dumps(results, indent=1))
    if not args.tiny:
        write_json(RESULTS, results)
        write_report(results)
        print(f"wrote {RESULTS} and {REPORT}")


if __name__ == "__main__":
    main()
