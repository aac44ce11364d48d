"""Figures without a plotting library: image grids and labelled comparison figures (PIL)."""

from __future__ import annotations

import math

import numpy as np
import torch
from PIL import Image, ImageDraw


def to_pil(x: torch.Tensor, size: int | None = None) -> Image.Image:
    """(C, H, W) or (1, C, H, W) tensor in [0, 1] -> PIL image (clamped), optionally upscaled
    (nearest neighbour, so pixels stay visible) so that its height is ``size``."""
    x = x.detach().float().cpu()
    if x.dim() == 4:
        x = x[0]
    arr = (x.clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    img = Image.fromarray(arr[..., 0] if arr.shape[2] == 1 else arr)
    if size is not None and img.height != size:
        img = img.resize((max(1, round(img.width * size / img.height)), size), Image.NEAREST)
    return img.convert("RGB")


def image_grid(x: torch.Tensor, nrow: int) -> Image.Image:
    """(N, C, H, W) in [0, 1] -> one image with ``nrow`` images per row and 2-pixel gaps."""
    n = x.shape[0]
    tiles = [to_pil(x[i]) for i in range(n)]
    w, h = tiles[0].size
    rows = math.ceil(n / nrow)
    grid = Image.new("RGB", (nrow * (w + 2), rows * (h + 2)), "white")
    for i, tile in enumerate(tiles):
        r, c = divmod(i, nrow)
        grid.paste(tile, (c * (w + 2) + 1, r * (h + 2) + 1))
    return grid


def comparison_figure(
    rows: list[list[tuple[str, torch.Tensor | None, str]]], tile: int = 128, title: str | None = None
) -> Image.Image:
    """A grid of labelled images: ``rows[i][j] = (column label, image or None, caption)``.

    Labels are drawn above each tile (on every row, since rows may have different columns) and
    captions (e.g. PSNR) below. Images of different sizes are scaled to height ``tile``.
    """
    pad, label_h, cap_h = 6, 14, 14
    title_h = 18 if title else 0
    widths = [[to_pil(img, tile).width if img is not None else tile for (_, img, _) in row] for row in rows]
    total_w = max(sum(w) + pad * (len(w) + 1) for w in widths)
    row_h = label_h + tile + cap_h + pad
    fig = Image.new("RGB", (total_w, title_h + len(rows) * row_h + pad), "white")
    draw = ImageDraw.Draw(fig)
    if title:
        draw.text((pad, 3), title, fill="black")
    y = title_h + pad
    for row, ws in zip(rows, widths):
        x = pad
        for (label, img, caption), w in zip(row, ws):
            draw.text((x, y), label[: max(4, w // 6)], fill="black")
            if img is not None:
                fig.paste(to_pil(img, tile), (x, y + label_h))
            else:
                draw.rectangle([x, y + label_h, x + w - 1, y + label_h + tile - 1], outline=(200, 200, 200))
            if caption:
                draw.text((x, y + label_h + tile + 1), caption, fill=(40, 40, 40))
            x += w + pad
        y += row_h
    return fig
