"""Losslessly cropped CelebA JPEGs (jpegtran -crop 80x80+0+16) -> the exact 64x64 box (12, 28, 76, 92)."""

import sys
from pathlib import Path

from PIL import Image

src, dst = Path(sys.argv[1]), Path(sys.argv[2])
dst.mkdir(parents=True, exist_ok=True)
for p in sorted(src.glob("*.jpg")):
    with Image.open(p) as im:
        im.convert("RGB").crop((12, 12, 76, 76)).save(dst / (p.stem + ".png"))
print("faces", len(list(dst.iterdir())))
