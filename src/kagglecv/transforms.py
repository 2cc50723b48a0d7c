"""Augmentation pipelines, declared in `params.yaml` and built with albumentations.

`augment:` is a list of `{TransformName: {argument: value}}` entries applied, in order, to
training images (uint8, (H, W, C), already resized to `img_size`), or `auto` for a default chosen
by the image size. `augment_test:` is a deterministic pipeline applied once to every image
before prediction (validation, out-of-fold and test alike). Names and arguments are checked
against albumentations itself, so a misspelt one stops with a message naming it.
"""

from __future__ import annotations

import difflib
import inspect
from typing import Any

import albumentations as A
import numpy as np


class TransformError(ValueError):
    """An `augment:` entry names a transform or argument albumentations does not have."""


def _transform_names() -> list[str]:
    return sorted(
        name
        for name, obj in vars(A).items()
        if inspect.isclass(obj) and issubclass(obj, A.BasicTransform) and not name.startswith("_")
    )


Spec = list[dict[str, dict[str, Any]]]


def default_augment(img_size: int) -> Spec:
    """`augment: auto`. Small images (digits, CIFAR): shifts of ~1/8 of the side, small rotations
    and zooms, no flips (a flipped digit is another symbol). Large images (photos): random
    resized crops and horizontal flips, the ImageNet recipe."""
    if img_size <= 64:
        shift = max(1, round(img_size / 8))
        return [{"Affine": {"translate_px": {"x": [-shift, shift], "y": [-shift, shift]},
                            "rotate": [-10, 10], "scale": [0.9, 1.1], "p": 1.0}}]  # fmt: skip
    return [
        {"RandomResizedCrop": {"size": [img_size, img_size], "scale": [0.35, 1.0]}},
        {"HorizontalFlip": {"p": 0.5}},
        {"RandomBrightnessContrast": {"brightness_limit": 0.2, "contrast_limit": 0.2, "p": 0.5}},
    ]


def resolve_augment(spec: Spec | str, img_size: int) -> Spec:
    return default_augment(img_size) if spec == "auto" else spec


def apply_transforms(images: np.ndarray, transform: A.Compose) -> np.ndarray:
    """Run a deterministic pipeline over uint8 (N, H, W, C) images; every output must share one shape."""
    if not transform.transforms:
        return images
    out = [transform(image=image)["image"] for image in images]
    out = [o[:, :, None] if o.ndim == 2 else o for o in out]
    if len({o.shape for o in out}) > 1:
        raise TransformError("augment_test: the pipeline must give every image the same shape; end it with Resize")
    return np.stack(out)


def spec_problems(spec: Spec, key: str) -> list[str]:
    """Every entry of `spec` albumentations cannot build, one message each (`key[i]` names the entry)."""
    problems = []
    for i, entry in enumerate(spec):
        try:
            build_transforms(spec=[entry], seed=0, key=key)
        except TransformError as err:
            problems.append(str(err).replace(f"{key}[0]", f"{key}[{i}]", 1))
    return problems


def build_transforms(*, spec: list[dict[str, dict[str, Any]]], seed: int, key: str = "augment") -> A.Compose:
    """Build an albumentations `Compose` from `spec`, seeded so a run can be repeated exactly."""
    names = _transform_names()
    transforms = []
    for i, entry in enumerate(spec):
        if len(entry) != 1:
            raise TransformError(f"{key}[{i}]: each entry is one {{TransformName: {{argument: value}}}}, got {entry!r}")
        ((name, args),) = entry.items()
        if name not in names:
            close = difflib.get_close_matches(name, names, n=3)
            raise TransformError(f"{key}[{i}]: albumentations has no transform {name!r}; closest: {', '.join(close)}")
        cls = getattr(A, name)
        allowed = [p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "args", "kwargs")]
        for arg in args or {}:
            if arg not in allowed:
                close = difflib.get_close_matches(arg, allowed, n=3)
                raise TransformError(
                    f"{key}[{i}].{name}: no argument {arg!r}; closest: {', '.join(close) or ', '.join(allowed)}"
                )
        try:
            transforms.append(cls(**(args or {})))
        except (TypeError, ValueError) as err:  # pydantic's ValidationError is a ValueError
            raise TransformError(f"{key}[{i}].{name}: {err}") from err
    return A.Compose(transforms, seed=seed)
