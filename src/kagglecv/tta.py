"""Test-time augmentation: deterministic views of a normalised batch, whose probabilities are averaged.

`tta:` in params lists the views beyond the original image, which is always the first view:
`hflip`, `vflip`, and `shift:DX:DY` (a translation by DX pixels right and DY down, the uncovered
border filled with zeros, i.e. the mean colour after normalisation).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is imported where a view is applied, so `check_params` checks `tta:` without it
    import torch

IDENTITY = "identity"
_SHIFT = re.compile(r"^shift:(-?\d+):(-?\d+)$")


class TTAError(ValueError):
    """A `tta:` entry names no view."""


def parse_views(spec: list[str], *, key: str = "tta") -> list[str]:
    """The views to predict: identity first, then `spec`, each checked."""
    for i, view in enumerate(spec):
        if view not in ("hflip", "vflip", IDENTITY) and not _SHIFT.match(view):
            raise TTAError(f"{key}[{i}]: unknown view {view!r}; use hflip, vflip or shift:DX:DY (pixels, e.g. shift:1:0)")
    return [IDENTITY, *(v for v in spec if v != IDENTITY)]


def apply_view(x: torch.Tensor, view: str) -> torch.Tensor:
    """(B, C, H, W) -> the same shape, seen through `view`."""
    if view == IDENTITY:
        return x
    if view == "hflip":
        return x.flip(3)
    if view == "vflip":
        return x.flip(2)
    match = _SHIFT.match(view)
    if match is None:
        raise TTAError(f"tta: unknown view {view!r}")
    import torch.nn.functional as F

    dx, dy = int(match[1]), int(match[2])
    h, w = x.shape[-2:]
    padded = F.pad(x, (max(dx, 0), max(-dx, 0), max(dy, 0), max(-dy, 0)))  # (left, right, top, bottom)
    top, left = max(-dy, 0), max(-dx, 0)
    return padded[..., top : top + h, left : left + w]
