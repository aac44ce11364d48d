"""Merge the per-setting tables of benchmark reports run on disjoint image sets into one.

    python benchmarks/merge_tables.py A.md:50 B.md:50 --title "Faces, 100 dev faces" --out merged.md

Each ``FILE:N`` is a report (``faces.py``, ``ct_real.py``, ...) of ``N`` images whose per-setting
sections (``### <setting>`` followed by a ``| method | ... | PSNR (dB) | SSIM | ...`` table of
``mean ± std`` cells) are read; within one file the first table of a (setting, method) wins (later
sections of a report repeat the baselines). The merged mean and population standard deviation over
all images are exact up to the rounding of the inputs:

    mean = sum_k n_k m_k / N,    std^2 = sum_k n_k (s_k^2 + (m_k - mean)^2) / N.

A (setting, method) missing from a file is left out of the merge (its cell reads ``–``), so every
merged figure covers all the files' images.

``A.md,A2.md:N`` reads several reports on the same ``N`` images as one, a later report's
(setting, method) replacing an earlier one's: a rerun of some methods updates their columns.

    python benchmarks/merge_tables.py faces.md,rerun-a.md:50 faces-51-100/faces.md,rerun-b.md:50
"""

from __future__ import annotations

import argparse
import math
import re
import sys
from pathlib import Path

CELL = re.compile(r"^\s*(-?[\d.]+)\s*±\s*([\d.]+)\s*$")
METRICS = ("PSNR (dB)", "SSIM", "LPIPS")


def read_tables(path: Path) -> dict[tuple[str, str], dict[str, tuple[float, float]]]:
    """``{(setting, method): {metric: (mean, std)}}`` from the ``### setting`` tables of one report."""
    found: dict[tuple[str, str], dict[str, tuple[float, float]]] = {}
    setting, columns = None, None
    for line in path.read_text().splitlines():
        if line.startswith("### "):
            setting, columns = line[4:].strip(), None
            continue
        if setting is None or not line.startswith("|"):
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells[0] == "method":
            columns = cells
            continue
        if columns is None or set(cells[0]) <= {"-"}:
            continue
        values = {}
        for name, cell in zip(columns, cells):
            m = CELL.match(cell)
            if name in METRICS and m:
                values[name] = (float(m.group(1)), float(m.group(2)))
        if values:
            found.setdefault((setting, cells[0]), values)
    return found


def merge(parts: list[tuple[dict, int]]) -> dict[tuple[str, str], dict[str, tuple[float, float]]]:
    keys = [k for k in parts[0][0] if all(k in p for p, _ in parts)]
    total = sum(n for _, n in parts)
    merged = {}
    for key in keys:
        merged[key] = {}
        for metric in parts[0][0][key]:
            if not all(metric in p[key] for p, _ in parts):
                continue
            mean = sum(n * p[key][metric][0] for p, n in parts) / total
            var = (
                sum(n * (p[key][metric][1] ** 2 + (p[key][metric][0] - mean) ** 2) for p, n in parts) / total
            )
            merged[key][metric] = (mean, math.sqrt(var))
    return merged


def render(merged: dict, title: str, sources: list[str], total: int) -> str:
    settings = list(dict.fromkeys(s for s, _ in merged))
    methods = list(dict.fromkeys(m for _, m in merged))
    lines = [f"# {title}\n", f"Merged from {len(sources)} reports on disjoint images ({total} in all):"]
    lines += [f"- {s}" for s in sources]
    for metric, spec in (("PSNR (dB)", ".2f"), ("SSIM", ".3f"), ("LPIPS", ".3f")):
        if not any(metric in v for v in merged.values()):
            continue
        lines += [f"\n## {metric}, mean over {total} images\n", "| setting | " + " | ".join(methods) + " |"]
        lines.append("|---|" + "---|" * len(methods))
        for s in settings:
            cells = [
                f"{merged[(s, m)][metric][0]:{spec}}" if metric in merged.get((s, m), {}) else "–"
                for m in methods
            ]
            lines.append(f"| {s} | " + " | ".join(cells) + " |")
    lines.append("\n## Per setting (mean ± std over all images)\n")
    for s in settings:
        lines += [f"\n### {s}\n", "| method | " + " | ".join(METRICS) + " |", "|---|---|---|---|"]
        for m in methods:
            if (s, m) in merged:
                v = merged[(s, m)]
                cells = [f"{v[k][0]:.3f} ± {v[k][1]:.3f}" if k in v else "–" for k in METRICS]
                lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "parts",
        nargs="+",
        metavar="FILE:N",
        help="a report and the number of images it covers (FILE,FILE2:N: reports on the same images, "
        "the later one's methods replacing the earlier one's)",
    )
    ap.add_argument("--title", default="Merged results")
    ap.add_argument("--out", type=Path, default=None, help="write here (default: print)")
    args = ap.parse_args(argv)
    parts, sources = [], []
    for item in args.parts:
        name, _, n = item.rpartition(":")
        if not name or not n.isdigit() or int(n) < 1:
            ap.error(f"{item!r}: expected FILE:N with N >= 1")
        tables: dict = {}
        for path in map(Path, name.split(",")):
            if not path.is_file():
                ap.error(f"{path}: no such report")
            found = read_tables(path)
            if not found:
                ap.error(f"{path}: no '### setting' tables with 'mean ± std' cells")
            tables.update(found)
        parts.append((tables, int(n)))
        sources.append(f"`{name}` ({n} images)")
    merged = merge(parts)
    if not merged:
        ap.error("the reports share no (setting, method)")
    text = render(merged, args.title, sources, sum(n for _, n in parts))
    if args.out:
        args.out.write_text(text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
