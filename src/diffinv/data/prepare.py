"""Turn the raw training sets into folders of prior-sized images that ``diffinv train`` reads.

- CelebA (``faces-64``): the 64x64 box ``(12, 28, 76, 92)`` of the 89x109 aligned faces (the crop
  DDPM/DDIM use for CelebA-64), split **by identity**: an identity whose number is divisible by
  ``dev_every`` goes to ``dev/``, every other to ``train/``, so no dev face shares a person with a
  training face.
- CT slices (``ct-chest-64``): each 8-bit slice resized (area-averaging) to ``size`` x ``size``,
  or kept at full size and passed through a denoiser (:func:`prepare_filtered`: the IQ-OTH/NCCD
  slices carry strong pixel noise, amplified by the narrow window of their source, that a prior
  would otherwise learn as tissue texture).

Example
-------
>>> prepare_celeba("../shared/data/faces/celeba", "../shared/data/faces/celeba_identity.txt",
...                "data/faces64")  # doctest: +SKIP
{'train': 8106, 'dev': 894}
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import DiffinvError

CELEBA_BOX = (12, 28, 76, 92)


def celeba_split(identity_file: str | Path, dev_every: int = 10) -> dict[str, list[str]]:
    """``{"train": [file, ...], "dev": [file, ...]}`` from CelebA's ``file identity`` list."""
    split: dict[str, list[str]] = {"train": [], "dev": []}
    for line_no, line in enumerate(Path(identity_file).read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2 or not parts[1].isdigit():
            raise DiffinvError(f"{identity_file}:{line_no}: expected 'file identity', got {line!r}")
        split["dev" if int(parts[1]) % dev_every == 0 else "train"].append(parts[0])
    return split


def _save_png(img: Image.Image, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    img.save(tmp, format="PNG")
    os.replace(tmp, path)


def prepare_celeba(
    image_dir: str | Path, identity_file: str | Path, out: str | Path, dev_every: int = 10
) -> dict[str, int]:
    """Write ``OUT/train/*.png`` and ``OUT/dev/*.png`` (64x64 RGB crops); returns the counts."""
    counts = {}
    for part, files in celeba_split(identity_file, dev_every).items():
        folder = Path(out) / part
        folder.mkdir(parents=True, exist_ok=True)
        for name in files:
            with Image.open(Path(image_dir) / name) as im:
                if im.size != (89, 109):
                    raise DiffinvError(f"{name}: expected an 89x109 CelebA image, got {im.size}")
                _save_png(im.convert("RGB").crop(CELEBA_BOX), folder / (Path(name).stem + ".png"))
        counts[part] = len(files)
    return counts


def _image_files(image_dir: str | Path) -> list[Path]:
    return sorted(p for p in Path(image_dir).iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))


def prepare_resized(image_dir: str | Path, out: str | Path, size: int = 64, channels: int = 1) -> int:
    """Resize every image of ``image_dir`` to ``size`` x ``size`` (box filter) into ``out``."""
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    files = _image_files(image_dir)
    for path in files:
        with Image.open(path) as im:
            small = im.convert("L" if channels == 1 else "RGB").resize((size, size), Image.BOX)
            _save_png(small, folder / (path.stem + ".png"))
    return len(files)


def prepare_filtered(
    image_dir: str | Path, out: str | Path, image_filter: Callable[[np.ndarray], np.ndarray]
) -> int:
    """Write every grey image of ``image_dir`` through ``image_filter`` into ``out`` (same size, 8-bit).

    ``image_filter`` maps an (H, W) float array in [0, 1] to one of the same shape (e.g. a TV
    denoiser); its output is clipped to [0, 1] and rounded to 8 bits. Returns the number of images.
    """
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    files = _image_files(image_dir)
    filtered = []  # all images first: a filter that fails on one leaves no folder half-written
    for path in files:
        with Image.open(path) as im:
            a = np.asarray(im.convert("L"), dtype=np.float64) / 255.0
        b = np.asarray(image_filter(a), dtype=np.float64)
        if b.shape != a.shape:
            raise DiffinvError(f"{path.name}: the filter returned shape {b.shape}, expected {a.shape}")
        filtered.append(np.rint(np.clip(b, 0, 1) * 255).astype(np.uint8))
    for path, b in zip(files, filtered):
        _save_png(Image.fromarray(b), folder / (path.stem + ".png"))
    return len(files)
