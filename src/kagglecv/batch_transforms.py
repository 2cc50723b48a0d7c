"""Whole-batch versions of the common albumentations transforms, for the fast data path.

The `augment:` list in params.yaml is always written in albumentations' terms. When every
entry has a batch version here, training applies it to a whole uint8 batch (B, C, H, W) at
once, on the batch's device, instead of one image at a time in Python. Each batch version
draws its random parameters from the same distribution as albumentations does (tested), so
the two paths train the same model in distribution.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

BatchOp = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


def _apply_mask(p: float, n: int, generator: torch.Generator) -> torch.Tensor:
    """(n,) bool: which images of the batch the transform touches, each with probability p."""
    return torch.rand(n, generator=generator) < p


def flip(dim: int, p: float) -> BatchOp:
    def op(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        mask = _apply_mask(p, len(x), generator).to(x.device).view(-1, 1, 1, 1)
        return torch.where(mask, x.flip(dim), x)

    return op


def translate(dx: tuple[int, int], dy: tuple[int, int], p: float) -> BatchOp:
    """Shift each image by whole pixels drawn uniformly from [low, high] (inclusive), filling with 0.

    Positive dx moves the content right and positive dy moves it down, as albumentations' Affine.
    """
    pad = max(abs(v) for v in (*dx, *dy))

    def op(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        b, _, h, w = x.shape
        mask = _apply_mask(p, b, generator)
        sx = torch.randint(dx[0], dx[1] + 1, (b,), generator=generator) * mask
        sy = torch.randint(dy[0], dy[1] + 1, (b,), generator=generator) * mask
        padded = F.pad(x, (pad, pad, pad, pad))  # (B, C, H + 2 pad, W + 2 pad), zeros outside
        rows = (torch.arange(h).view(1, h) + pad - sy.view(b, 1)).to(x.device)  # (B, H) source rows
        cols = (torch.arange(w).view(1, w) + pad - sx.view(b, 1)).to(x.device)  # (B, W) source columns
        batch = torch.arange(b, device=x.device).view(b, 1, 1)
        out = padded.permute(0, 2, 3, 1)[batch, rows.view(b, h, 1), cols.view(b, 1, w)]  # (B, H, W, C)
        return out.permute(0, 3, 1, 2).contiguous()

    return op


def _range(value: Any) -> tuple[int, int] | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return (-abs(value), abs(value))
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(isinstance(v, int) for v in value):
        return (min(value), max(value))
    return None


def _affine(args: dict[str, Any]) -> BatchOp | None:
    """Affine with integer `translate_px` only (the default scale, rotation and shear, zero fill)."""
    if set(args) - {"translate_px", "p", "border_mode", "fill"} or args.get("fill", 0) != 0:
        return None
    if args.get("border_mode", 0) != 0:  # cv2.BORDER_CONSTANT
        return None
    px = args.get("translate_px")
    if isinstance(px, dict):
        if set(px) - {"x", "y"}:
            return None
        dx, dy = _range(px.get("x", 0)), _range(px.get("y", 0))
    else:
        dx = dy = _range(px)
    if dx is None or dy is None:
        return None
    return translate(dx, dy, float(args.get("p", 0.5)))


_BUILDERS: dict[str, Callable[[dict[str, Any]], BatchOp | None]] = {
    "HorizontalFlip": lambda a: flip(3, float(a.get("p", 0.5))) if set(a) <= {"p"} else None,
    "VerticalFlip": lambda a: flip(2, float(a.get("p", 0.5))) if set(a) <= {"p"} else None,
    "Affine": _affine,
}


def build_batch_transforms(spec: list[dict[str, dict[str, Any]]]) -> Callable[..., torch.Tensor] | None:
    """The batch version of `spec`, or None when some entry has none (then albumentations runs per image)."""
    ops: list[BatchOp] = []
    for entry in spec:
        ((name, args),) = entry.items()
        builder = _BUILDERS.get(name)
        op = builder(dict(args or {})) if builder else None
        if op is None:
            return None
        ops.append(op)

    def apply(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        for op in ops:
            x = op(x, generator)
        return x

    return apply
