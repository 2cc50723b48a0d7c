"""Stage `check_params`: run the strict loader over the whole of `params.yaml` on every edit.

Reads: `params.yaml`, all of it (dvc.yaml tracks the whole file, so an edit of a key that no other
stage tracks, such as a misspelt `lrr: 0.1`, still reruns this stage and stops `dvc repro`).
Writes nothing, and no stage reads anything of it, so it reruns alone and costs a fraction of a
second. It imports the loader only (no torch), and so leaves the two checks that need timm or
albumentations, the `model` name and the `augment`/`augment_test` transforms, to `train`, which
tracks those keys and runs the full loader when they change.
"""

from __future__ import annotations

import sys
from kagglecv.params import Params, ParamsError, load_params
from kagglecv.paths import Paths


def run(paths: Paths = Paths()) -> Params:
    """Every key of `paths.params` known, of its type and in range; raises `ParamsError` listing each problem."""
    return load_params(paths.params)


def main() -> None:
    try:
        run()
    except ParamsError as err:
        print(f"error: {err}", file=sys.stderr)  # as every stage's main reports it (runtime.main_of imports torch)
        raise SystemExit(1) from None
    print(f"{Paths().params}: every key known, typed and in range")


if __name__ == "__main__":
    main()
