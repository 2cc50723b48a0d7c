"""`python -m kagglecv.bench_blend`: three experiments, their blend and a pseudo-labelling round on real MNIST.

The competition is `bench_layouts`' Digit Recognizer: 4,000 training and 1,000 hidden test digits of
real MNIST (`pip install -e ".[bench]"`), 28x28 grey pixel rows, `solution.csv` scoring each
submission as the leaderboard would. In a temporary copy of the project, the data stages are
committed; then `dvc exp run` makes the shipped recipe (`default`) and two cheap variations of it
(`seed7`: a second seed, `-S seeds=[7]`, on the same folds; `vgg`: `-S model=vgg_style`, the Food-11
homework's network), queued and run at once by `dvc queue start`; `python -m kagglecv.blend default
seed7 vgg` blends them; then two pseudo-labelling rounds (`pseudo`: `-S pseudo_label.source=default`,
the recipe with the test digits `default` predicted confidently added to every fold's training part
with its top class; `pseudo_soft`: the same digits with its probabilities as the targets) run in the
workspace (a queued run's copy cannot resolve another experiment's name), then a member made on other folds
(`otherfolds`: `-S seed=1`), whose blend with `default` must be refused with nothing written.
Writes `benchmarks/blend.json` and a BENCHMARKS.md section; each figure is also printed
as it lands. `--n-folds` and `--epochs` shrink every run for a quick look.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
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
EXPERIMENTS = {  # name -> dvc exp run -S settings, over the committed params (the recipe) or the workspace's
    "default": [],
    "seed7": ["seeds=[7]"],
    "vgg": ["model=vgg_style"],
    "pseudo": ["pseudo_label.source=default"],
    "pseudo_soft": ["pseudo_label.source=default", "pseudo_label.labels=soft"],
    "otherfolds": ["seed=1", "epochs=1", "model=mlp", "pseudo_label.source="],  # after pseudo; the blend must refuse it
}
MEMBERS = ("default", "seed7", "vgg")  # blended


def sh(project: Path, *args: str) -> str:
    done = subprocess.run(args, cwd=project, env=project_env(project), capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return done.stdout + done.stderr


def project_env(project: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(project / "src"), "DVC_NO_ANALYTICS": "1", "GIT_AUTHOR_NAME": "kagglecv",
            "GIT_AUTHOR_EMAIL": "kagglecv@localhost", "GIT_COMMITTER_NAME": "kagglecv",
            "GIT_COMMITTER_EMAIL": "kagglecv@localhost"}  # fmt: skip


def scores(project: Path, name: str) -> dict:
    """Experiment `name`'s cv and leaderboard figures and its train stage's minutes (read at its revision)."""
    import dvc.api

    def read(file: str) -> dict:
        with dvc.api.open(f"metrics/{file}", repo=str(project), rev=name) as f:
            return json.load(f)

    train = read("train.json")["train"]
    figures = {"cv": read("cv.json")["cv"], "leaderboard": read("leaderboard.json")["leaderboard"],
               "minutes": train["minutes"], **({"pseudo_labels": train["pseudo_labels"]} if "pseudo_labels" in train else {})}  # fmt: skip
    print(json.dumps({name: figures}), flush=True)
    return figures


def run_queued(project: Path, names: list[str]) -> None:
    """`dvc exp run --queue -n NAME` for each of `names` (their `EXPERIMENTS` settings), all run at once by
    `dvc queue start -j`; stops, with the failed one's log, if one fails."""
    for name in names:
        sh(project, "dvc", "exp", "run", "--queue", "-n", name, *[a for s in EXPERIMENTS[name] for a in ("-S", s)])
    # The workers it starts outlive it holding its stdout: so no pipe, or reading it never ends.
    subprocess.run(["dvc", "queue", "start", "-j", str(len(names))], cwd=project, env=project_env(project), check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        while any(word in sh(project, "dvc", "queue", "status") for word in ("Queued", "Running")):
            time.sleep(20)
    finally:
        sh(project, "dvc", "queue", "stop")
    status = sh(project, "dvc", "queue", "status")
    for name in names:
        if not any(name in line and "Success" in line for line in status.splitlines()):
            tail = sh(project, "dvc", "queue", "logs", name)[-3000:]
            raise SystemExit(f"experiment {name} failed:\n{status}\n{tail}")


def run_bench(work: Path, repo: Path, overrides: dict, *, mnist: bool = True) -> dict:
    """The experiments, the blend and the refusal in a copy of the project under `work`; their figures
    (`mnist` False: on the embedded digits). Experiments that do not need each other run at once."""
    project = work / "project"
    if mnist:
        raw = write_mnist_competition(work / "competition", "pixel_csv")
        data = {**yaml.safe_load((repo / "params.yaml").read_text())["data"], "source": "local", "path": str(raw)}
        overrides = {**overrides, "data": data}
    copy_project(repo, project, overrides)
    sh(project, "dvc", "repro", "-q", "split")  # the data stages, which every experiment shares
    sh(project, "git", "add", "-A")
    sh(project, "git", "commit", "-qm", "the competition and its folds")
    run_queued(project, list(MEMBERS))
    runs = {name: scores(project, name) for name in MEMBERS}
    blend = blend_figures(project)  # printed as it lands, before the pseudo-labelling round
    for name in ("pseudo", "pseudo_soft"):  # in the workspace, whose git knows the experiment `default`
        runs[name] = run_experiment(project, name)
    return {"runs": runs, "blend": blend, "refusal": check_refusal(project)}


def run_experiment(project: Path, name: str) -> dict:
    """`dvc exp run -n NAME` in the workspace, with its `EXPERIMENTS` settings over the workspace's params."""
    sh(project, "dvc", "exp", "run", "-q", "-n", name, *[a for s in EXPERIMENTS[name] for a in ("-S", s)])
    return scores(project, name)


def blend_figures(project: Path) -> dict:
    """`python -m kagglecv.blend default seed7 vgg` (`--method auto`): metrics/blend.json and its seconds."""
    start = time.perf_counter()
    sh(project, "python", "-m", "kagglecv.blend", *MEMBERS)
    blend = json.loads((project / "metrics/blend.json").read_text())["blend"]
    blend["seconds"] = round(time.perf_counter() - start, 1)
    print(json.dumps({"blend": blend}), flush=True)
    return blend


def check_refusal(project: Path) -> str:
    """A member made on other folds (`seed=1` splits differently): the blend stops and writes nothing."""
    (project / "metrics/blend.json").unlink()
    run_experiment(project, "otherfolds")
    env = {**os.environ, "PYTHONPATH": str(project / "src")}
    done = subprocess.run(["python", "-m", "kagglecv.blend", "default", "otherfolds"], cwd=project, env=env,
                          capture_output=True, text=True)  # fmt: skip
    if done.returncode != 1 or (project / "metrics/blend.json").exists():
        raise SystemExit(f"the blend of other folds was not refused:\n{done.stdout}\n{done.stderr}")
    return done.stderr.strip().splitlines()[-1]


def write_report(results: dict) -> None:
    runs, blend = results["runs"], results["blend"]
    lines = [f"| `{name}` | {r['cv']['accuracy']} | {r['cv']['log_loss']} | {r['leaderboard']['accuracy']} | "
             f"{r.get('pseudo_labels', '')} | {r['minutes']} |" for name, r in runs.items()]  # fmt: skip
    lines += [f"| blend, `--method {m}`{' (auto: chosen)' if m == blend['method'] else ''} | {b['cv']['accuracy']} | "
              f"{b['cv']['log_loss']} | {blend['leaderboard']['accuracy'] if m == blend['method'] else ''} | | |"
              for m, b in blend["methods"].items()]  # fmt: skip
    weights = ", ".join(f"{k} {v}" for k, v in blend["weights"].items())
    machine, load = results["machine"], results.get("load")
    command = results.get("command", "python -m kagglecv.bench_blend")
    replace_section(REPORT, "bench:blend", (
        f"## Ensembling on real MNIST, {machine['device']} ({machine['cpu']}, {machine['cores']} cores), {machine['date']}\n\n"
        f"`{command}`"
        + (f", the machine's load average {load[0]} at the start and {load[1]} at the end" if load else "") + ". "
        "4,000 training and 1,000 hidden test digits (Digit Recognizer). `default`: the shipped params"
        + "".join(f", `{k}: {v}`" for k, v in results["overrides"].items()) + "; "
        "`seed7`: `-S seeds=[7]`; `vgg`: `-S model=vgg_style`; `pseudo`: `-S pseudo_label.source=default`; "
        "`pseudo_soft`: the same with `-S pseudo_label.labels=soft`. "
        "The blend's cv figures come from weights fit out of fold; the submission's weights (fit on every "
        f"out-of-fold row): {weights}; the blend took {blend['seconds']} s.\n\n"
        "| run | cv.accuracy | cv.log_loss | hidden-test accuracy | pseudo-labels | train minutes |\n"
        "| --- | --- | --- | --- | --- | --- |\n" + "\n".join(lines) + "\n\n"
        f"A member made on other folds: `{results['refusal']}`\n\n"
    ))  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="the embedded digits, 2 folds, 2 epochs: checks the run, writes nothing")
    parser.add_argument("--n-folds", type=int, help="n_folds for every run (default: params.yaml's)")
    parser.add_argument("--epochs", type=int, help="epochs for every run (default: params.yaml's)")
    parser.add_argument("--parallel-folds", type=int, help="folds trained at once in every run, one torch thread each "
                        "(scheduling only: the files are those of one fold after another with one thread)")
    parser.add_argument("--keep", type=Path, help="run in this new folder and keep it (its project/ can be --reblend)")
    parser.add_argument("--reblend", type=Path, help="a kept project of an earlier run: blend its experiments again")
    args = parser.parse_args()
    if args.reblend:  # the same experiments' artifacts, blended by this checkout's blend module
        shutil.copytree(Path("src"), args.reblend / "src", dirs_exist_ok=True)
        results = {**json.loads(RESULTS.read_text()), "blend": blend_figures(args.reblend)}
        write_json(RESULTS, results)
        write_report(results)
        return
    overrides = {k: v for k, v in (("n_folds", args.n_folds), ("epochs", args.epochs)) if v is not None}
    if args.parallel_folds:
        overrides["parallel"] = {"folds": args.parallel_folds, "backend": "local", "address": "auto", "threads": 1}
    if args.tiny:
        overrides = {"n_folds": 2, "epochs": 2, "img_size": 8}
    load = [round(os.getloadavg()[0], 1)]  # the machine is shared: its 1-minute load average, start and end
    with contextlib.ExitStack() as stack:
        work = args.keep or Path(stack.enter_context(tempfile.TemporaryDirectory()))
        work.mkdir(parents=True, exist_ok=args.keep is None)
        results = run_bench(work, Path.cwd(), overrides, mnist=not args.tiny)
    results["load"] = [*load, round(os.getloadavg()[0], 1)]
    results["overrides"] = overrides
    results["command"] = " ".join(["python -m kagglecv.bench_blend", *sys.argv[1:]])
    results["machine"] = machine_description(select_precision("auto"))
    print(json.dumps(results, indent=1))
    if not args.tiny:
        write_json(RESULTS, results)
        write_report(results)
        print(f"wrote {RESULTS} and {REPORT}")


if __name__ == "__main__":
    main()
