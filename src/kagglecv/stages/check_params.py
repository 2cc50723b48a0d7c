"""Stage `check_params`: validate the whole of `params.yaml` on every edit, before any stage deletes outputs.

Reads: `params.yaml`, all of it (dvc.yaml tracks the whole file, so an edit of a key that no other
stage tracks, such as a misspelt `lrr: 0.1`, still reruns this stage and stops `dvc repro`). It is
the first stage `dvc repro` runs, so a bad value stops the pipeline before DVC removes the outputs
of the stage that would have found it (the last good `models/`). Writes nothing.

Checked: every key known, of its type and in range (the strict loader); the `tta` views; the
`model` name and the smallest `img_size` it accepts; the `augment`/`augment_test` transforms; a
`metric` other than auto known and fitting `task`. The
project's own models are looked up in `OWN_MODELS`, without torch, so the stage costs a fraction
of a second. The other checks need heavy imports: any other model name is looked up in timm's
registry and probed with a blank image (about 5 s of imports on a 2-core CPU), the transforms are
built with albumentations (about 4 s). They run only for values the last successful `train` did
not run with (its params in `dvc.lock`), since `train` validated those with the same checks.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml

from kagglecv.params import Params, ParamsError, load_params
from kagglecv.paths import Paths
from kagglecv.tta import TTAError, parse_views

# The smallest img_size each of the project's models accepts: kcv_cnn pools 2x2 twice (4 px -> 1),
# vgg_style at least once; the flat models take any size. tests/test_no_silent_params.py checks it.
OWN_MODELS = {"kcv_cnn": 4, "softmax_regression": 1, "mlp": 1, "vgg_style": 2}
LARGEST_PROBE = 1024  # px: a model that takes no square image up to this size is reported as such


def run(params: Params, paths: Paths = Paths()) -> Params:
    """What the loader (`load_params`, which `main` runs first) cannot check alone: the views, the model
    and the pipelines usable; returns `params`, or raises `ParamsError` listing each problem."""
    path = paths.params
    trained = trained_params(paths.lock)
    errors = []
    try:
        parse_views(params.tta)
    except TTAError as err:
        errors.append(str(err))
    if (params.model, params.img_size) != (trained.get("model"), trained.get("img_size")):
        errors += check_model(params)
    if params.metric != "auto":
        errors += check_metric(params.metric, params.task)
    for key in ("augment", "augment_test"):
        if getattr(params, key) not in ("auto", [], trained.get(key)):
            errors += check_transforms(key, getattr(params, key))
    if errors:
        raise ParamsError(f"{path} has {len(errors)} problem(s):\n" + "\n".join(f"  - {e}" for e in errors))
    return params


def trained_params(lock: Path) -> dict[str, Any]:
    """The params the last successful `train` ran with, from `dvc.lock` ({} when there is none)."""
    if not lock.is_file():
        return {}
    stages = (yaml.safe_load(lock.read_text()) or {}).get("stages", {})
    return stages.get("train", {}).get("params", {}).get("params.yaml", {}) or {}


def check_metric(name: str, task: str) -> list[str]:
    """A `metric` the registry does not know, or one that does not score the task `task:` names."""
    from kagglecv.metrics import MetricError, get_metric  # scikit-learn: a second of imports

    try:
        get_metric(name, None if task == "auto" else task)
    except MetricError as err:
        return [str(err)]
    return []


def check_transforms(key: str, spec: list) -> list[str]:
    """Problems with each entry of an albumentations pipeline (`augment`, `augment_test`)."""
    from kagglecv.transforms import spec_problems  # albumentations: seconds of imports

    return spec_problems(spec, key)


def check_model(params: Params) -> list[str]:
    """Problems with `model`: a name timm does not know, or an `img_size` below the smallest it accepts."""
    if params.model in OWN_MODELS:
        smallest = OWN_MODELS[params.model]
    else:
        from kagglecv.models import unknown_model  # timm: seconds of imports, for other models only

        problem = unknown_model(params.model)
        if problem:
            return [problem]
        if params.img_size == "auto":
            return []
        smallest = smallest_img_size(params.model, params.img_size)
    if params.img_size != "auto" and (smallest is None or params.img_size < smallest):
        least = f"the smallest it accepts is {smallest}" if smallest else f"it takes no image up to {LARGEST_PROBE} px"
        return [f"img_size: {params.img_size} is too small for model {params.model}; {least}"]
    return []


def smallest_img_size(name: str, img_size: int) -> int | None:
    """The smallest side at least `img_size` or below it that timm model `name` takes (`img_size` when it
    takes that), found by passing it a blank image; None when no side up to `LARGEST_PROBE` works."""
    import torch

    from kagglecv.models import build_model

    model = build_model(name=name, num_classes=2, in_chans=1, img_size=img_size).eval()

    def takes(side: int) -> bool:
        try:
            with torch.no_grad():
                model(torch.zeros(1, 1, side, side))
        except (RuntimeError, AssertionError, ValueError):  # too small for a kernel or pooling; a fixed-size model
            return False
        return True

    if takes(img_size):
        return img_size
    low, high = img_size, img_size * 2
    while not takes(high):
        if high >= LARGEST_PROBE:
            return None
        low, high = high, min(2 * high, LARGEST_PROBE)
    while high - low > 1:  # takes(high), not takes(low)
        middle = (low + high) // 2
        low, high = (low, middle) if takes(middle) else (middle, high)
    return high


def main() -> None:
    paths = Paths()
    try:
        run(load_params(paths.params), paths)
    except ParamsError as err:
        print(f"error: {err}", file=sys.stderr)  # as every stage's main reports it (runtime.main_of imports torch)
        raise SystemExit(1) from None
    print(f"{paths.params}: every key known, typed and in range")


if __name__ == "__main__":
    main()
