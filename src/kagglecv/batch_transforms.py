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

import math

import torch
import torch.nn.functional as F
from torchvision.ops import roi_align

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


def random_resized_crop(size: tuple[int, int], scale: tuple[float, float], ratio: tuple[float, float]) -> BatchOp:
    """albumentations' RandomResizedCrop for a whole batch: each image's crop box drawn as albumentations
    draws it (10 tries of area and log-ratio, else a centre crop), then every box resampled to `size` at
    once with `roi_align` (bilinear, several samples per output pixel when shrinking, so no aliasing)."""
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))

    def op(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        b, _, height, width = x.shape
        area = height * width
        target = area * (scale[0] + (scale[1] - scale[0]) * torch.rand(b, 10, generator=generator, dtype=torch.float64))
        aspect = torch.exp(log_ratio[0] + (log_ratio[1] - log_ratio[0]) * torch.rand(b, 10, generator=generator, dtype=torch.float64))
        w, h = torch.round(torch.sqrt(target * aspect)), torch.round(torch.sqrt(target / aspect))
        fits = (w > 0) & (w <= width) & (h > 0) & (h <= height)
        first = fits.to(torch.int8).argmax(1)  # the first try that fits, as albumentations takes it
        found = fits.any(1)
        w, h = w.gather(1, first[:, None])[:, 0], h.gather(1, first[:, None])[:, 0]
        fw, fh = _centre_crop_size(height, width, ratio)
        w, h = torch.where(found, w, torch.tensor(float(fw), dtype=w.dtype)), torch.where(found, h, torch.tensor(float(fh), dtype=h.dtype))
        start = torch.rand(b, 2, generator=generator, dtype=torch.float64)
        y0 = torch.where(found, torch.floor((height - h + 1) * start[:, 0]), torch.floor((height - h) / 2))
        x0 = torch.where(found, torch.floor((width - w + 1) * start[:, 1]), torch.floor((width - w) / 2))
        boxes = torch.stack([torch.arange(b, dtype=torch.float64), x0, y0, x0 + w, y0 + h], 1)
        out = roi_align(x.float(), boxes.float().to(x.device), output_size=size, spatial_scale=1.0, sampling_ratio=-1,
                        aligned=True)  # fmt: skip
        return out.round_().clamp_(0, 255).to(torch.uint8)

    return op


def _centre_crop_size(height: int, width: int, ratio: tuple[float, float]) -> tuple[int, int]:
    """albumentations' fallback crop (width, height): the whole image, narrowed to the nearest allowed ratio."""
    in_ratio = width / height
    if in_ratio < ratio[0]:
        return width, round(width / ratio[0])
    if in_ratio > ratio[1]:
        return round(height * ratio[1]), height
    return width, height


def brightness_contrast(brightness: tuple[float, float], contrast: tuple[float, float], p: float) -> BatchOp:
    """albumentations' RandomBrightnessContrast (brightness relative to 255) for a whole uint8 batch:
    each image becomes clip(x * alpha + beta * 255), truncated to uint8 as albumentations' lookup table is."""

    def op(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        b = len(x)
        mask = _apply_mask(p, b, generator)
        alpha = 1.0 + contrast[0] + (contrast[1] - contrast[0]) * torch.rand(b, generator=generator)
        beta = brightness[0] + (brightness[1] - brightness[0]) * torch.rand(b, generator=generator)
        alpha, beta = torch.where(mask, alpha, 1.0), torch.where(mask, beta, 0.0)
        out = x.float() * alpha.to(x.device).view(-1, 1, 1, 1) + (beta * 255).to(x.device).view(-1, 1, 1, 1)
        return out.clamp_(0, 255).to(torch.uint8)

    return op


def resize_batch(x: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 (B, C, H, W) to (B, C, size, size): bilinear, antialiased when shrinking."""
    if x.shape[-2:] == (size, size):
        return x
    out = F.interpolate(x.float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return out.round_().clamp_(0, 255).to(torch.uint8)


def _pair(value: Any, default: tuple[float, float], symmetric: bool = False) -> tuple[float, float] | None:
    if value is None:
        return default
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (-float(value), float(value)) if symmetric else (float(value), float(value))
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(isinstance(v, (int, float)) for v in value):
        return (float(value[0]), float(value[1]))
    return None


def _random_resized_crop(args: dict[str, Any]) -> BatchOp | None:
    """RandomResizedCrop with its default interpolation and p (the crop geometry is what matters)."""
    if set(args) - {"size", "scale", "ratio"}:
        return None
    size = args.get("size")
    if not (isinstance(size, (list, tuple)) and len(size) == 2 and all(isinstance(v, int) for v in size)):
        return None
    scale, ratio = _pair(args.get("scale"), (0.08, 1.0)), _pair(args.get("ratio"), (0.75, 4 / 3))
    if scale is None or ratio is None:
        return None
    return random_resized_crop((int(size[0]), int(size[1])), scale, ratio)


def _brightness_contrast(args: dict[str, Any]) -> BatchOp | None:
    if set(args) - {"brightness_limit", "contrast_limit", "p"}:
        return None
    brightness = _pair(args.get("brightness_limit"), (-0.2, 0.2), symmetric=True)
    contrast = _pair(args.get("contrast_limit"), (-0.2, 0.2), symmetric=True)
    if brightness is None or contrast is None:
        return None
    return brightness_contrast(brightness, contrast, float(args.get("p", 0.5)))


def _range(value: Any) -> tuple[int, int] | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return (-abs(value), abs(value))
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(isinstance(v, int) for v in value):
        return (min(value), max(value))
    return None


def affine(
    scale_x: tuple[float, float], scale_y: tuple[float, float], rotate: tuple[float, float],
    dx: tuple[int, int], dy: tuple[int, int], p: float,
) -> BatchOp:
    """albumentations' Affine (scale, then rotation about the centre, then a whole-pixel shift; bilinear,
    zero fill) for a whole batch: each image's parameters drawn uniformly from the same ranges."""

    def op(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        b, _, h, w = x.shape
        mask = _apply_mask(p, b, generator)

        def uniform(low_high: tuple[float, float]) -> torch.Tensor:
            low, high = low_high
            return low + (high - low) * torch.rand(b, generator=generator, dtype=torch.float64)

        sx, sy = torch.where(mask, uniform(scale_x), 1.0), torch.where(mask, uniform(scale_y), 1.0)
        angle = torch.deg2rad(torch.where(mask, uniform(rotate), 0.0))
        tx = (torch.randint(dx[0], dx[1] + 1, (b,), generator=generator) * mask).double()
        ty = (torch.randint(dy[0], dy[1] + 1, (b,), generator=generator) * mask).double()
        # Output pixel -> input pixel, about the centre: inverse of (rotation @ scale), then undo the shift.
        cos, sin = torch.cos(angle), torch.sin(angle)
        m00, m01, m10, m11 = cos / sx, -sin / sx, sin / sy, cos / sy
        ox, oy = -(m00 * tx + m01 * ty), -(m10 * tx + m11 * ty)
        # The same map in grid_sample's coordinates (align_corners: -1 and 1 are the outer pixel centres).
        wh, hh = (w - 1) / 2 or 1.0, (h - 1) / 2 or 1.0
        theta = torch.stack([
            torch.stack([m00, m01 * hh / wh, ox / wh], 1),
            torch.stack([m10 * wh / hh, m11, oy / hh], 1),
        ], 1).to(device=x.device, dtype=torch.float32)  # fmt: skip
        grid = F.affine_grid(theta, [b, x.shape[1], h, w], align_corners=True)
        out = F.grid_sample(x.float(), grid, mode="bilinear", padding_mode="zeros", align_corners=True)
        return torch.where(mask.to(x.device).view(-1, 1, 1, 1), out.round_().clamp_(0, 255).to(x.dtype), x)

    return op


def _affine(args: dict[str, Any]) -> BatchOp | None:
    """Affine with `scale`, `rotate` and integer `translate_px` (no shear, bilinear, zero fill)."""
    if set(args) - {"translate_px", "scale", "rotate", "p", "border_mode", "fill", "interpolation"}:
        return None
    if args.get("fill", 0) != 0 or args.get("border_mode", 0) != 0 or args.get("interpolation", 1) != 1:
        return None  # other than cv2.BORDER_CONSTANT with 0, cv2.INTER_LINEAR
    px = args.get("translate_px", 0)
    if isinstance(px, dict):
        if set(px) - {"x", "y"}:
            return None
        dx, dy = _range(px.get("x", 0)), _range(px.get("y", 0))
    else:
        dx = dy = _range(px)
    scale = args.get("scale", 1.0)
    if isinstance(scale, dict):
        sx, sy = _pair(scale.get("x"), (1.0, 1.0)), _pair(scale.get("y"), (1.0, 1.0))
    else:
        sx = sy = _pair(scale, (1.0, 1.0))
    rotate = _pair(args.get("rotate"), (0.0, 0.0))
    if None in (dx, dy, sx, sy, rotate):
        return None
    p = float(args.get("p", 0.5))
    if sx == sy == (1.0, 1.0) and rotate == (0.0, 0.0):
        return translate(dx, dy, p)  # whole-pixel shifts: exact, no resampling
    return affine(sx, sy, rotate, dx, dy, p)


_BUILDERS: dict[str, Callable[[dict[str, Any]], BatchOp | None]] = {
    "HorizontalFlip": lambda a: flip(3, float(a.get("p", 0.5))) if set(a) <= {"p"} else None,
    "VerticalFlip": lambda a: flip(2, float(a.get("p", 0.5))) if set(a) <= {"p"} else None,
    "Affine": _affine,
    "RandomResizedCrop": _random_resized_crop,
    "RandomBrightnessContrast": _brightness_contrast,
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
