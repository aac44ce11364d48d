"""The tables and bar chart of ``diffinv eval``: per-method summaries of the per-image records."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .catalog import is_phantom_data

CSV_COLUMNS = ("image", "method", "psnr", "ssim", "lpips", "consistency", "seconds", "nfe")
_STATS = ("psnr", "ssim", "lpips", "consistency", "seconds", "nfe")
#: with K > 1 posterior samples per image (``samples``): the outputs are the samples' mean, and these
#: columns add what one sample scores on average and how often the 90% per-pixel interval of the K
#: samples covers the ground truth (0.9 for a calibrated sampler, up to the K-sample quantile error).
SAMPLE_COLUMNS = ("psnr_1", "ssim_1", "lpips_1", "coverage90")


def summarize(records: list[dict], methods: Sequence[str]) -> dict[str, dict]:
    """Per method: ``n`` and ``<metric>_mean`` / ``<metric>_std`` (population std) of psnr, ssim, lpips,
    consistency, seconds and nfe over the images (None where a metric is unavailable)."""
    summary = {}
    for method in methods:
        rows = [r for r in records if r["method"] == method]
        entry: dict = {"n": len(rows)}
        for key in _STATS + SAMPLE_COLUMNS:
            vals = [r[key] for r in rows if r.get(key) is not None]
            if vals:
                a = np.asarray(vals, dtype=np.float64)
                entry[f"{key}_mean"] = float(a.mean())
                entry[f"{key}_std"] = float(a.std()) if np.all(np.isfinite(a)) else float("nan")
            else:
                entry[f"{key}_mean"] = entry[f"{key}_std"] = None
        summary[method] = entry
    return summary


def _fmt(value, spec: str) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return format(value, spec)


_CSV_FORMATS = {
    "psnr_1": ".6f",
    "ssim_1": ".6f",
    "lpips_1": ".6f",
    "coverage90": ".4f",
    "psnr": ".6f",
    "ssim": ".6f",
    "lpips": ".6f",
    "consistency": ".6e",
    "seconds": ".4f",
    "nfe": "d",
}


def metrics_csv(records: list[dict], samples: int = 1) -> str:
    """The per-image table (one row per image and method) as CSV text; with ``samples`` > 1 the
    metrics score the samples' mean and :data:`SAMPLE_COLUMNS` follow."""
    columns = CSV_COLUMNS + (SAMPLE_COLUMNS if samples > 1 else ())
    lines = [",".join(columns)]
    for r in records:
        cells = [r["image"], r["method"]] + [_fmt(r.get(k), _CSV_FORMATS[k]) for k in columns[2:]]
        lines.append(",".join(cells))
    return "\n".join(lines) + "\n"


def _pm(mean, std, spec: str) -> str:
    if mean is None:
        return "n/a"
    if not math.isfinite(mean):
        return str(mean)
    return (
        f"{format(mean, spec)} ± {format(std, spec)}"
        if std is not None and math.isfinite(std)
        else format(mean, spec)
    )


def results_markdown(summary: dict[str, dict], config: dict) -> str:
    """The per-method summary as a Markdown table, with a line describing the run."""
    data = config["data"]
    src = data if is_phantom_data(data) else Path(data).name
    lines = [
        f"# diffinv eval: {config['task']}",
        "",
        f"{config['n']} images from {src}, {config['crop']}x{config['crop']} crops, "
        f"sigma_y = {config['sigma_y']:g}, model {Path(config['model']).name if config['model'] else '(none)'}, "
        f"steps {config['steps'] if config['steps'] is not None else 'default'}, seed {config['seed']}. "
        + (
            f"Every restoration projected onto {{A x = y}} ∩ [0, 1] ({config['project']} rounds). "
            if config.get("project")
            else ""
        )
        + "Mean ± std over images; LPIPS v0.1 (AlexNet), lower is closer, n/a below 31x31; "
        "consistency = ||A x - y|| / ||y||.",
        "",
        "| method | PSNR (dB) | SSIM | LPIPS | consistency | seconds/image | NFE |",
        "|---|---|---|---|---|---|---|",
    ]
    for method, s in summary.items():
        lines.append(
            f"| {method} | {_pm(s['psnr_mean'], s['psnr_std'], '.2f')} | {_pm(s['ssim_mean'], s['ssim_std'], '.3f')} "
            f"| {_pm(s['lpips_mean'], s['lpips_std'], '.3f')} "
            f"| {_pm(s['consistency_mean'], s['consistency_std'], '.1e')} "
            f"| {_pm(s['seconds_mean'], s['seconds_std'], '.2f')} | {_fmt(s['nfe_mean'], 'g') or 'n/a'} |"
        )
    k = config.get("samples") or 1
    if k > 1:
        lines += [
            "",
            f"With {k} posterior samples per image, the table above scores their mean; one sample "
            "scores on average (and the 90% per-pixel interval of the samples covers the ground truth):",
            "",
            "| method | PSNR, 1 sample | SSIM, 1 sample | LPIPS, 1 sample | 90% coverage |",
            "|---|---|---|---|---|",
        ]
        for method, s in summary.items():
            lines.append(
                f"| {method} | {_pm(s['psnr_1_mean'], s['psnr_1_std'], '.2f')} "
                f"| {_pm(s['ssim_1_mean'], s['ssim_1_std'], '.3f')} "
                f"| {_pm(s['lpips_1_mean'], s['lpips_1_std'], '.3f')} "
                f"| {_pm(s['coverage90_mean'], s['coverage90_std'], '.3f')} |"
            )
    return "\n".join(lines) + "\n"


def psnr_bar_plot(summary: dict[str, dict], title: str = "mean PSNR (dB), whiskers: std"):
    """A PIL bar chart of mean PSNR per method with std whiskers (no plotting library)."""
    from PIL import Image, ImageDraw

    methods = list(summary)
    bar_w, gap, left, top, bottom, plot_h = 44, 28, 44, 30, 40, 200
    width = max(320, left + len(methods) * (bar_w + gap) + gap)
    img = Image.new("RGB", (width, top + plot_h + bottom), "white")
    draw = ImageDraw.Draw(img)
    draw.text((6, 6), title, fill="black")
    finite = [
        (s["psnr_mean"] or 0)
        + (s["psnr_std"] if s["psnr_std"] is not None and math.isfinite(s["psnr_std"]) else 0)
        for s in summary.values()
        if s["psnr_mean"] is not None and math.isfinite(s["psnr_mean"])
    ]
    top_value = max([v for v in finite if v > 0], default=1.0)
    tick = 10 ** math.floor(math.log10(top_value / 4))  # a 1/2/5 x 10^k step giving 4-8 ticks
    tick *= next(m for m in (1, 2, 5, 10) if top_value / (tick * m) <= 8)
    ymax = tick * math.ceil(top_value * 1.05 / tick)
    y0 = top + plot_h

    def ypix(v: float) -> float:
        return y0 - plot_h * min(max(v, 0.0), ymax) / ymax

    draw.line([(left - 4, top), (left - 4, y0)], fill="black")
    draw.line([(left - 4, y0), (width - 6, y0)], fill="black")
    for k in range(round(ymax / tick) + 1):
        v = k * tick
        draw.line([(left - 8, ypix(v)), (left - 4, ypix(v))], fill="black")
        draw.text((4, ypix(v) - 6), f"{v:g}", fill="black")
    palette = [(66, 114, 196), (237, 125, 49), (112, 173, 71), (255, 192, 0), (91, 155, 213), (165, 105, 189)]
    for i, method in enumerate(methods):
        x = left + gap + i * (bar_w + gap)
        cx = x + bar_w // 2
        mean, std = summary[method]["psnr_mean"], summary[method]["psnr_std"]
        label_y = y0
        if mean is not None and math.isfinite(mean):
            draw.rectangle([x, ypix(mean), x + bar_w, y0], fill=palette[i % len(palette)])
            label_y = ypix(mean)
            if std is not None and math.isfinite(std) and std > 0:
                lo, hi = ypix(mean - std), ypix(mean + std)
                draw.line([(cx, lo), (cx, hi)], fill="black")
                draw.line([(cx - 6, lo), (cx + 6, lo)], fill="black")
                draw.line([(cx - 6, hi), (cx + 6, hi)], fill="black")
                label_y = hi
            label = f"{mean:.2f}"
        else:
            label = "n/a" if mean is None else str(mean)
        draw.text((cx - draw.textlength(label) / 2, label_y - 14), label, fill="black")
        name = method[:12]
        draw.text((cx - draw.textlength(name) / 2, y0 + 6), name, fill="black")
    return img
