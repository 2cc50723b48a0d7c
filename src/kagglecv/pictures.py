"""Pictures for `dvc plots show`: image grids with captions and a confusion matrix, as PNG files.

Drawn with Pillow (already a torchvision dependency), so the project needs no plotting library.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from kagglecv.artifacts import atomic_path

CAPTION_PX = 12  # height of one caption line under each image


def _to_pil(image: np.ndarray, side: int) -> Image.Image:
    """uint8 (H, W, C) -> an RGB image scaled (nearest) to `side` pixels wide."""
    rgb = np.repeat(image, 3, axis=-1) if image.shape[-1] == 1 else image[..., :3]
    pil = Image.fromarray(np.ascontiguousarray(rgb))
    return pil.resize((side, round(side * pil.height / pil.width)), Image.NEAREST)


def write_image_grid(path: Path, images: np.ndarray, captions: list[str] | None = None, *, columns: int = 8,
                     side: int = 96) -> None:  # fmt: skip
    """uint8 images (N, H, W, C) in a grid, each `side` pixels wide, with optional multi-line captions."""
    n = len(images)
    lines = max((c.count("\n") + 1 for c in captions), default=0) if captions else 0
    tiles = [_to_pil(image, side) for image in images]
    cell_h = max((t.height for t in tiles), default=side) + lines * CAPTION_PX + 4
    rows = max(1, -(-n // columns))
    sheet = Image.new("RGB", (min(n, columns) * (side + 4) or side, rows * cell_h), "white")
    draw, font = ImageDraw.Draw(sheet), ImageFont.load_default()
    for i, tile in enumerate(tiles):
        x, y = (i % columns) * (side + 4), (i // columns) * cell_h
        sheet.paste(tile, (x, y))
        if captions:
            draw.multiline_text((x, y + tile.height + 1), captions[i], fill="black", font=font, spacing=1)
    _save(path, sheet)


def write_confusion_image(path: Path, actual: np.ndarray, predicted: np.ndarray, classes: list[str],
                          *, cell: int = 36) -> None:  # fmt: skip
    """Counts of (actual row, predicted column) class indices as a shaded grid with the numbers."""
    k = len(classes)
    counts = np.zeros((k, k), np.int64)
    np.add.at(counts, (actual, predicted), 1)
    shade = counts / np.maximum(counts.sum(1, keepdims=True), 1)  # share of each actual class
    margin = 8 * max(len(c) for c in classes) + 16
    sheet = Image.new("RGB", (margin + k * cell, margin + k * cell + CAPTION_PX), "white")
    draw, font = ImageDraw.Draw(sheet), ImageFont.load_default()
    draw.text((margin, 0), "predicted ->   (rows: actual)", fill="black", font=font)
    for i, name in enumerate(classes):
        draw.text((2, margin + i * cell + cell // 3), name[:12], fill="black", font=font)
        draw.text((margin + i * cell + 4, CAPTION_PX + 2), name[:4], fill="black", font=font)
        for j in range(k):
            level = int(255 * (1 - shade[i, j]))
            x, y = margin + j * cell, margin + i * cell
            draw.rectangle((x, y, x + cell - 1, y + cell - 1), fill=(level, level, 255), outline="grey")
            draw.text((x + 4, y + cell // 3), str(counts[i, j]), fill="black" if level > 120 else "white", font=font)
    _save(path, sheet)


def _save(path: Path, image: Image.Image) -> None:
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG")
