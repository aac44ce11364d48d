"""Which HU window makes real CT slices look like the ``ct-chest-64`` training slices?

The IQ-OTH/NCCD slices that ``ct-chest-64`` is trained on come already windowed (8-bit, window not
published). For each window (centre, width) on a grid, the TCIA dev slices (HU) are windowed to
[0, 1] and 4x4 box-averaged to 64x64 like the training slices; the score is the mean absolute gap
between the two sets' pixel-value quantiles (0.5 % .. 99.5 %). The best windows are written to
``<out>/ct_window_fit.md``.

    python benchmarks/ct_window_fit.py            # needs ../shared/data/ct
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import header, write_text  # noqa: E402

SHARED = ROOT.parent / "shared" / "data" / "ct"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=SHARED, help="folder with train/iqothnccd and dev/tcia_hu")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = ap.parse_args(argv)
    train = sorted((args.data / "train" / "iqothnccd").glob("*"))[::4]
    dev = sorted((args.data / "dev" / "tcia_hu").glob("*.png"))[::3]
    if not train or not dev:
        sys.exit(f"no slices under {args.data}/train/iqothnccd or {args.data}/dev/tcia_hu")
    target = np.concatenate(
        [np.asarray(Image.open(f).convert("L").resize((64, 64), Image.BOX)).ravel() / 255.0 for f in train]
    )
    hu = [np.asarray(Image.open(f)).astype(np.float64) - 1024 for f in dev]
    qs = np.linspace(0.005, 0.995, 199)
    target_q = np.quantile(target, qs)
    scores = []
    for centre in range(-300, 1001, 25):
        for width in range(200, 3001, 50):
            pix = np.concatenate(
                [
                    np.clip((h - (centre - width / 2)) / width, 0, 1)
                    .reshape(64, 4, 64, 4)
                    .mean((1, 3))
                    .ravel()
                    for h in hu
                ]
            )
            scores.append((float(np.abs(np.quantile(pix, qs) - target_q).mean()), centre, width))
    scores.sort()
    lines = [
        header("HU window matching the ct-chest-64 training slices"),
        f"- data: {len(train)} IQ-OTH/NCCD training slices (every 4th), {len(dev)} TCIA dev slices (every 3rd)",
        "- grid: centre -300..1000 HU step 25, width 200..3000 HU step 50; score: mean |quantile gap|",
        "",
        "| rank | centre (HU) | width (HU) | mean quantile gap |",
        "|---|---|---|---|",
    ]
    lines += [f"| {i + 1} | {c} | {w} | {d:.4f} |" for i, (d, c, w) in enumerate(scores[:8])]
    path = write_text(args.out / "ct_window_fit.md", "\n".join(lines) + "\n")
    print(f"best window: centre {scores[0][1]}, width {scores[0][2]} -> {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
