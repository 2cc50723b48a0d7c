"""The one strict, typed reader of `params.yaml`.

Every knob lives in `params.yaml`; code reads it only through the frozen `Params` object built
here. The loader rejects unknown keys, wrong types and out-of-range values, reporting every
problem at once with the key's dotted path and what is allowed.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from kagglecv.paths import Paths


class ParamsError(ValueError):
    """`params.yaml` is invalid; the message lists every problem, one per line."""


def _range(ge: float | None = None, gt: float | None = None, le: float | None = None) -> dict:
    return {"ge": ge, "gt": gt, "le": le}


@dataclass(frozen=True)
class DataParams:
    """Where the competition comes from (`data:` section). `source` picks which of `path`,
    `competition` and `name` applies; the layout is detected from the files unless `layout` says."""

    source: Literal["digits", "local", "kaggle", "torchvision"] = "digits"
    path: str = ""  # local: the competition's folder, or the .zip Kaggle hands out
    competition: str = ""  # kaggle: the competition's slug, as in kaggle.com/competitions/<slug>
    name: str = ""  # torchvision: a dataset class, e.g. MNIST, FashionMNIST, CIFAR10
    layout: Literal["auto", "pixel_csv", "labels_csv", "class_folders", "label_in_name"] = "auto"
    channels: int = field(default=0, metadata=_range(ge=0, le=4))  # 0: follow the data
    test_fraction: float = field(default=0.2, metadata=_range(gt=0.0, le=0.9))  # digits only
    solution: str = ""  # optional CSV of the test part's true labels (id, label), copied in as solution.csv
    valid_split: Literal["merge", "holdout"] = "merge"  # a shipped valid/ folder: into the k folds, or the one fold
    bad_images: Literal["skip", "stop"] = "skip"  # unusable training images: left out (listed), or stop `split`
    similar_labels: Literal["merge", "stop"] = "merge"  # labels differing only in case or whitespace
    labels_file: str = ""  # labels_csv: the CSV of id and label in the competition's folder; "": found from the columns
    max_megapixels: float = field(default=500.0, metadata=_range(gt=0.0))  # larger images are unusable (decoding cost)


Augment = list[dict[str, dict[str, Any]]]  # albumentations: [{TransformName: {argument: value}}, ...]


@dataclass(frozen=True)
class MixupParams:
    """timm's Mixup/CutMix (`mixup:` section); both alphas 0 turns it off."""

    mixup_alpha: float = field(default=0.0, metadata=_range(ge=0.0))
    cutmix_alpha: float = field(default=0.0, metadata=_range(ge=0.0))
    prob: float = field(default=1.0, metadata=_range(ge=0.0, le=1.0))  # share of batches mixed
    switch_prob: float = field(default=0.5, metadata=_range(ge=0.0, le=1.0))  # cutmix instead of mixup

    @property
    def enabled(self) -> bool:
        return self.prob > 0 and (self.mixup_alpha > 0 or self.cutmix_alpha > 0)


@dataclass(frozen=True)
class EmaParams:
    """Exponential moving average of the weights (`ema:` section), evaluated and checkpointed when on."""

    enabled: bool = False
    decay: float = field(default=0.999, metadata=_range(ge=0.0, le=1.0))  # per optimiser step, after warmup


FIRST_ROUND = "first_round"  # pseudo_label.source: this experiment's folds trained once without pseudo-labels


@dataclass(frozen=True)
class PseudoLabelParams:
    """Test images added to every fold's training part with the labels a fold ensemble predicted (`pseudo_label:`)."""

    source: str = ""  # "": off; first_round; or a revision (experiment, branch, tag, commit): its test_probs.csv
    threshold: float = field(default=0.99, metadata=_range(gt=0.0, le=1.0))  # the top class probability needed
    labels: Literal["hard", "soft"] = "hard"  # hard: the top class; soft: the ensemble's probabilities as the target


@dataclass(frozen=True)
class ParallelParams:
    """How many folds train at once, and where (`parallel:` section; see `kagglecv.parallel`)."""

    folds: int = field(default=1, metadata=_range(ge=1))  # 1: one after another in the stage's process
    backend: Literal["local", "ray"] = "local"  # local: worker processes; ray: Ray tasks
    address: str = "auto"  # ray: auto (the cluster this machine joined), local (a private one), ray://host:port
    threads: int = field(default=0, metadata=_range(ge=0))  # torch threads per fold; 0: cores / folds (1 fold: torch's)


@dataclass(frozen=True)
class Params:
    """Everything in `params.yaml`. Top-level keys are the everyday knobs (`dvc exp run -S lr=…`).

    Every default is the value params.yaml ships, so a key left out of the file means the shipped recipe."""

    seed: int = 42
    seeds: int | list[int] = field(default=1, metadata=_range(ge=1))  # training runs per fold, averaged: a count or the seeds
    task: Literal["auto", "multiclass", "multilabel", "binary", "ordinal"] = "auto"  # auto: from the labels
    metric: str = "auto"  # the competition's metric (kagglecv.metrics); auto: the task's natural one
    n_folds: int = field(default=5, metadata=_range(ge=2))
    model: str = "kcv_cnn"
    pretrained: str = ""  # "": random init; "timm": timm's local cache, offline; else a weights file
    normalize: Literal["auto", "data", "model"] = "auto"  # auto: the model's stats when pretrained
    img_size: int | Literal["auto"] = field(default="auto", metadata=_range(ge=1))  # auto: from the images and device
    cache_size: int = field(default=0, metadata=_range(ge=0))  # decoded side kept on disk; 0: img_size
    epochs: int = field(default=20, metadata=_range(ge=1))
    time_limit: float = field(default=0.0, metadata=_range(ge=0.0))  # minutes for the train stage; 0: no limit
    batch_size: int = field(default=64, metadata=_range(ge=1))
    lr: float = field(default=3.0e-3, metadata=_range(gt=0.0))
    weight_decay: float = field(default=5.0e-4, metadata=_range(ge=0.0))
    optimizer: Literal["adamw", "sgd"] = "adamw"
    momentum: float = field(default=0.9, metadata=_range(ge=0.0, le=1.0))  # SGD only
    nesterov: bool = False  # SGD only
    scheduler: Literal["cosine", "onecycle", "step", "plateau", "none"] = "cosine"
    warmup_epochs: int = field(default=1, metadata=_range(ge=0))
    decay_epochs: int = field(default=10, metadata=_range(ge=1))  # step: period; plateau: patience
    decay_rate: float = field(default=0.1, metadata=_range(gt=0.0, le=1.0))  # step, plateau: lr factor
    loss: Literal["cross_entropy", "focal", "mse"] = "cross_entropy"
    label_smoothing: float = field(default=0.0, metadata=_range(ge=0.0, le=1.0))
    focal_gamma: float = field(default=2.0, metadata=_range(ge=0.0))
    class_balance: Literal["none", "weights", "sampler"] = "none"
    mixup: MixupParams = MixupParams()
    clip_grad: float = field(default=0.0, metadata=_range(ge=0.0))  # max gradient norm; 0: off
    accumulate: int = field(default=1, metadata=_range(ge=1))  # batches per optimiser step
    ema: EmaParams = EmaParams()
    patience: int = field(default=6, metadata=_range(ge=0))  # epochs without improvement
    monitor: Literal["auto", "valid_loss", "valid_accuracy", "metric"] = "auto"  # auto: see kagglecv.tasks
    soup: int = field(default=1, metadata=_range(ge=1))  # a fold's model: the average of its `soup` best epochs' weights
    amp: Literal["auto", "on", "off", "bf16", "fp16"] = "auto"  # auto: on with CUDA, off on CPU
    channels_last: bool = True
    compile: bool = False  # torch.compile the model
    loader: Literal["auto", "tensor", "dataloader"] = "auto"  # see kagglecv.loaders
    num_workers: int = field(default=0, metadata=_range(ge=0))  # dataloader path only
    deterministic: bool = False  # PyTorch's deterministic algorithms (GPU; the CPU path repeats exactly anyway)
    devices: int | Literal["auto"] = field(default=1, metadata=_range(ge=1))  # auto: every GPU
    parallel: ParallelParams = ParallelParams()
    tta: list[str] = field(default_factory=list)  # extra test-time views: hflip, vflip, shift:DX:DY
    data: DataParams = DataParams()
    pseudo_label: PseudoLabelParams = PseudoLabelParams()
    augment: Augment | Literal["auto"] = field(default_factory=lambda: [
        {"Affine": {"translate_px": {"x": [-2, 2], "y": [-2, 2]}, "rotate": [-15, 15], "scale": [0.85, 1.15], "p": 1.0}}
    ])  # training; auto: chosen by img_size
    augment_test: Augment = field(default_factory=list)  # deterministic, before every prediction


def training_seeds(params: Params) -> list[int]:
    """The seeds each fold trains with: `seeds` as listed, or a count of them from `seed` on (1: `seed` alone)."""
    return list(params.seeds) if isinstance(params.seeds, list) else [params.seed + i for i in range(params.seeds)]


def _check_together(params: Params, errors: list[str]) -> None:
    """Rules that involve more than one key."""
    if isinstance(params.seeds, list) and (not params.seeds or len(set(params.seeds)) != len(params.seeds)):
        errors.append(f"seeds: {params.seeds} must list at least one seed, each once (or give a count, e.g. 3)")
    if params.mixup.enabled and params.batch_size % 2:
        errors.append(f"batch_size: {params.batch_size} must be even when mixup is on (timm's Mixup pairs images)")
    source = params.pseudo_label.source
    if source != FIRST_ROUND and source.strip().lower().replace("-", "_").replace(" ", "_") == FIRST_ROUND:
        errors.append(f"pseudo_label.source: {source!r} reads like {FIRST_ROUND}; write {FIRST_ROUND} for this "
                      "experiment's own first round")  # fmt: skip
    if source and params.pseudo_label.labels == "soft" and params.mixup.enabled:
        errors.append("pseudo_label.labels: soft cannot train with mixup (timm's Mixup takes class indices, not "
                      "probability rows); set pseudo_label.labels: hard, or both mixup alphas to 0.0")  # fmt: skip
    if params.parallel.folds > 1 and params.devices != 1:
        errors.append(f"parallel.folds: {params.parallel.folds} trains each fold in one process; set devices: 1 "
                      f"(devices: {params.devices} splits one fold over several)")  # fmt: skip


def load_params(path: Path | str = Paths().params) -> Params:
    """Read and validate `path`; raise `ParamsError` naming every bad key.

    Keys, types, ranges and the rules that tie keys together are checked here; the names that only
    timm and albumentations know (`model`, `augment` entries) where they are built
    (`kagglecv.fold_training.check_names`), so reading params imports neither."""
    path = Path(path)
    if not path.exists():
        raise ParamsError(f"{path} not found: run from the repository root, where params.yaml lives")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ParamsError(f"{path} is not valid YAML: {err}") from err
    errors: list[str] = []
    params = _build(Params, raw, "", errors)
    if not errors:
        _check_together(params, errors)
    if errors:
        raise ParamsError(f"{path} has {len(errors)} problem(s):\n" + "\n".join(f"  - {e}" for e in errors))
    return params


def _build(cls: type, raw: Any, prefix: str, errors: list[str]) -> Any:
    if not isinstance(raw, dict):
        errors.append(f"{prefix.rstrip('.') or 'params.yaml'}: expected a mapping of keys, got {raw!r}")
        return cls()
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in dataclasses.fields(cls)}
    for key in raw:
        if key not in known:
            close = difflib.get_close_matches(str(key), known, n=3)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            errors.append(f"{prefix}{key}: unknown key{hint}; allowed: {', '.join(known)}")
    values = {}
    for name, f in known.items():
        if name not in raw:
            continue
        key = prefix + name
        value = _convert(hints[name], raw[name], key, errors)
        if value is not _INVALID:
            _check_range(f.metadata, value, key, errors)
            values[name] = value
    return cls(**values)


_INVALID = object()


def _convert(tp: Any, value: Any, key: str, errors: list[str]) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, key + ".", errors)
    if origin is Literal:
        allowed = typing.get_args(tp)
        if isinstance(value, bool) and {"on", "off"} <= set(allowed):
            return "on" if value else "off"  # YAML 1.1, and so `dvc exp run -S amp=off`, reads on/off as booleans
        if value in allowed:
            return value
        close = difflib.get_close_matches(str(value), [str(a) for a in allowed], n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        errors.append(f"{key}: {value!r} is not allowed{hint}; choose one of {', '.join(map(str, allowed))}")
        return _INVALID
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(tp):
            trial: list[str] = []
            converted = _convert(option, value, key, trial)
            if not trial:
                return converted
        errors.append(f"{key}: {value!r} does not fit {_describe(tp)}")
        return _INVALID
    if origin is list:
        if not isinstance(value, list):
            errors.append(f"{key}: expected a list, got {value!r}")
            return _INVALID
        (item_tp,) = typing.get_args(tp)
        items = [_convert(item_tp, v, f"{key}[{i}]", errors) for i, v in enumerate(value)]
        return _INVALID if _INVALID in items else items
    if origin is dict:
        if value is None:
            return {}
        if not isinstance(value, dict):
            errors.append(f"{key}: expected a mapping, got {value!r}")
            return _INVALID
        _, val_tp = typing.get_args(tp)
        out = {str(k): _convert(val_tp, v, f"{key}.{k}", errors) for k, v in value.items()}
        return _INVALID if _INVALID in out.values() else out
    return _convert_scalar(tp, value, key, errors)


def _convert_scalar(tp: Any, value: Any, key: str, errors: list[str]) -> Any:
    if tp is Any:
        return value
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp in (int, float) and isinstance(value, bool):
        pass  # YAML's yes/no are not numbers
    elif isinstance(value, tp):
        return value
    hint = ""
    if tp is float and isinstance(value, str):
        try:
            float(value)
            hint = " (YAML reads '3e-4' as text: write it with a dot, 3.0e-4)"
        except ValueError:
            pass
    errors.append(f"{key}: expected {_describe(tp)}, got {value!r}{hint}")
    return _INVALID


def _describe(tp: Any) -> str:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return " or ".join(_describe(t) for t in typing.get_args(tp))
    if typing.get_origin(tp) is Literal:
        return "one of " + ", ".join(map(str, typing.get_args(tp)))
    return {int: "an integer", float: "a number", str: "text", bool: "true or false"}.get(tp, str(tp))


def _check_range(meta: typing.Mapping, value: Any, key: str, errors: list[str]) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return
    if meta.get("ge") is not None and value < meta["ge"]:
        errors.append(f"{key}: {value} is too small; it must be at least {meta['ge']}")
    if meta.get("gt") is not None and value <= meta["gt"]:
        errors.append(f"{key}: {value} is too small; it must be greater than {meta['gt']}")
    if meta.get("le") is not None and value > meta["le"]:
        errors.append(f"{key}: {value} is too large; it must be at most {meta['le']}")
