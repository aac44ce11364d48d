"""Figures without a plotting library: image grids and labelled comparison figures (PIL)."""

from __future__ import annotations

import math

import numpy as np
import torch
from PIL import Image, ImageDraw

from .errors import DiffinvError


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


# ---------------------------------------------------------------------- heatmaps (uncertainty maps)
#: anchor colours of a viridis-like map (dark blue -> green -> yellow): perceptually ordered and
#: readable in grayscale print, so that a brighter pixel always means a larger value
_MAP_ANCHORS = np.array(
    [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]], dtype=np.float64
)


def colormap(v: np.ndarray) -> np.ndarray:
    """Values in [0, 1] (any shape, clipped) -> uint8 RGB (shape + (3,)), piecewise-linear viridis-like."""
    v = np.clip(np.nan_to_num(np.asarray(v, dtype=np.float64)), 0.0, 1.0) * (len(_MAP_ANCHORS) - 1)
    i = np.minimum(np.floor(v).astype(int), len(_MAP_ANCHORS) - 2)
    w = (v - i)[..., None]
    return ((1 - w) * _MAP_ANCHORS[i] + w * _MAP_ANCHORS[i + 1]).round().astype(np.uint8)


def heatmap(
    values: torch.Tensor | np.ndarray,
    vmax: float | None = None,
    size: int | None = None,
    colorbar: bool = True,
    label: str | None = None,
) -> Image.Image:
    """A 2-D map (H, W) as a colour image, optionally with a vertical colour bar and its scale.

    ``values`` are mapped linearly from [0, vmax] (default: their maximum) onto :func:`colormap`;
    ``size`` upscales to that height (nearest neighbour). The bar on the right is labelled with
    0, vmax / 2 and vmax (and ``label`` above it), so the figure can be read without the data.

    Example
    -------
    >>> heatmap(post.std[0].pow(2).mean(0).sqrt(), label="std").save("std.png")  # doctest: +SKIP
    """
    a = values.detach().float().cpu().numpy() if isinstance(values, torch.Tensor) else np.asarray(values)
    a = np.squeeze(a)
    if a.ndim != 2:
        raise DiffinvError(f"heatmap needs a 2-D map, got shape {a.shape}")
    finite = a[np.isfinite(a)]
    top = float(vmax) if vmax is not None else float(finite.max()) if finite.size else 1.0
    top = top if top > 0 else 1.0  # an all-zero map (a deterministic method) is drawn dark, not NaN
    img = Image.fromarray(colormap(a / top))
    if size is not None and img.height != size:
        img = img.resize((max(1, round(img.width * size / img.height)), size), Image.NEAREST)
    if not colorbar:
        return img
    h, bar_w, text_w, pad = img.height, 10, 48, 4
    top_pad = 12 if label else 6
    fig = Image.new("RGB", (img.width + pad + bar_w + text_w, h + top_pad + 6), "white")
    fig.paste(img, (0, top_pad))
    ramp = colormap(np.linspace(1.0, 0.0, h)[:, None].repeat(bar_w, 1))  # top = vmax
    fig.paste(Image.fromarray(ramp), (img.width + pad, top_pad))
    draw = ImageDraw.Draw(fig)
    x_text = img.width + pad + bar_w + 3
    for frac in (1.0, 0.5, 0.0):
        yy = top_pad + round((1 - frac) * (h - 1))
        draw.line([(img.width + pad + bar_w, yy), (x_text - 1, yy)], fill="black")
        draw.text((x_text, max(0, min(yy - 5, fig.height - 11))), f"{frac * top:.3g}", fill="black")
    if label:
        draw.text((0, 0), label, fill="black")
    return fig


def uncertainty_figure(
    measurement: torch.Tensor | None,
    mean: torch.Tensor,
    std: torch.Tensor,
    truth: torch.Tensor | None = None,
    tile: int = 128,
    title: str | None = None,
) -> Image.Image:
    """One row per image: measurement / posterior mean / std / |error| / ground truth.

    All (B, C, H, W) in [0, 1] image units (``measurement`` already displayable, e.g.
    :func:`diffinv.evaluate.measurement_view`). The std and |mean - truth| maps are the RMS over
    channels, drawn with one shared colour scale (the larger maximum of the two), so that where the
    error exceeds the spread shows as colour: the spread is a claim about the error, and this is
    the figure that checks it. Columns without data (no truth) are left out.
    """
    B = mean.shape[0]
    std_map = std.pow(2).mean(1).sqrt()
    err_map = (mean.clamp(0, 1) - truth).pow(2).mean(1).sqrt() if truth is not None else None
    rows = []
    for b in range(B):
        top = float(std_map[b].max())
        if err_map is not None:
            top = max(top, float(err_map[b].max()))
        cols = []
        if measurement is not None:
            cols.append(("measurement", to_pil(measurement[b], tile)))
        cols.append(("mean", to_pil(mean[b], tile)))
        cols.append(("std", heatmap(std_map[b], vmax=top, size=tile)))
        if err_map is not None:
            cols.append(("|error|", heatmap(err_map[b], vmax=top, size=tile)))
            cols.append(("ground truth", to_pil(truth[b], tile)))
        rows.append(cols)
    pad, label_h = 6, 14
    title_h = 18 if title else 0
    row_h = label_h + max(img.height for row in rows for _, img in row) + pad
    width = max(sum(img.width for _, img in row) + pad * (len(row) + 1) for row in rows)
    fig = Image.new("RGB", (width, title_h + len(rows) * row_h + pad), "white")
    draw = ImageDraw.Draw(fig)
    if title:
        draw.text((pad, 3), title, fill="black")
    y = title_h + pad
    for row in rows:
        x = pad
        for label, img in row:
            draw.text((x, y), label, fill="black")
            fig.paste(img, (x, y + label_h))
            x += img.width + pad
        y += row_h
    return fig
