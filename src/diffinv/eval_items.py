"""The images of ``diffinv eval``: the first files of a folder, cropped at seeded positions, or
held-out ellipse phantoms; and the per-image seeds every run derives from (so a resumed or
distributed run draws exactly what a single one would)."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from .data.io import IMAGE_SUFFIXES, load_image
from .errors import DiffinvError

#: what an evaluation folder may hold: images, DICOM slices, NIfTI slices or volumes
DATA_SUFFIXES = (*IMAGE_SUFFIXES, ".dcm", ".nii", ".nii.gz")

#: generator seeds of evaluation phantoms start here, far from the (seed * 1_000_003 + step)
#: seeds ``diffinv train`` draws its training phantoms from, so evaluation images are held out.
HELD_OUT_SEED_OFFSET = 7_000_000_000_000


@dataclass
class _Item:
    """One evaluation image: its index, output name, source and the crop to degrade (1, C, S, S)."""

    index: int
    name: str
    source: str
    x: torch.Tensor


# ------------------------------------------------------------------------------------ seeds
def item_seed(seed: int, index: int) -> int:
    """The seed of image ``index``'s crop position, operator, measurement noise and solver."""
    return (int(seed) * 1_000_003 + int(index)) % (2**62)


def _generator(seed: int) -> torch.Generator:
    return torch.Generator(device="cpu").manual_seed(int(seed))


# ------------------------------------------------------------------------------------ data
def _parse_ellipses(data: str, n: int | None) -> int | None:
    """The number of phantoms if ``data`` names phantoms ("ellipses:N", or "ellipses" with n)."""
    if data == "ellipses":
        if n is None:
            raise DiffinvError("data 'ellipses' needs a count: use ellipses:N (or give n)")
        return n
    match = re.fullmatch(r"ellipses:(\d+)", data)
    if match is None:
        if data.startswith("ellipses:"):
            raise DiffinvError(f"malformed data {data!r}: use ellipses:N with a positive integer N")
        return None
    count = int(match.group(1))
    if count < 1:
        raise DiffinvError(f"data {data!r} asks for no phantoms: use ellipses:N with N >= 1")
    return count


def list_images(folder: str | os.PathLike) -> list[Path]:
    """The image files (png, jpg, tif, bmp, dcm, nii, nii.gz) directly in ``folder``, sorted by name
    (hidden ones skipped)."""
    p = Path(folder)
    if not p.exists():
        raise DiffinvError(f"data folder not found: {p}")
    if not p.is_dir():
        raise DiffinvError(f"data must be an image folder or ellipses:N; {p} is not a folder")
    files = sorted(
        f
        for f in p.iterdir()
        if f.is_file() and not f.name.startswith(".") and f.name.lower().endswith(DATA_SUFFIXES)
    )
    if not files:
        raise DiffinvError(f"no images ({', '.join(DATA_SUFFIXES)}) in data folder {p}")
    return files


def _first_files(data: str, n: int | None) -> list[tuple[Path, int | None]]:
    """The first ``n`` images of the folder ``data`` (all when ``n`` is None), as (file, slice):
    a NIfTI volume counts as its slices, in order (:func:`diffinv.data.medical.slices_of`)."""
    from .data.medical import slices_of

    images = []
    for f in list_images(data):
        images.extend((f, k) for k in slices_of(f))
        if n is not None and len(images) >= n:
            return images[:n]
    if n is not None and n > len(images):
        raise DiffinvError(f"asked for the first {n} images but {data} holds only {len(images)}")
    return images


def _safe_stem(stem: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", stem).strip("._") or "image"


def crop_image(x: torch.Tensor, crop: int, seed: int, index: int, source: str = "image") -> torch.Tensor:
    """A ``crop`` x ``crop`` window of ``x`` (1, C, H, W) at a position seeded by (seed, index)."""
    H, W = x.shape[-2:]
    if H < crop or W < crop:
        raise DiffinvError(f"{source} is {H}x{W}, smaller than the {crop}x{crop} crop; use a smaller crop")
    g = _generator(item_seed(seed, index) + 1)
    top = int(torch.randint(0, H - crop + 1, (1,), generator=g))
    left = int(torch.randint(0, W - crop + 1, (1,), generator=g))
    return x[..., top : top + crop, left : left + crop].clamp(0, 1).contiguous()


def load_items(
    data: str, n: int | None, crop: int, channels: int, seed: int, slices: dict | None = None
) -> list[_Item]:
    """The evaluation images: the first ``n`` files of a folder (sorted) cropped, or phantoms.

    ``slices`` (``{"window": ..., "hu_offset": ..., "resize": bool}``) reads CT slices in HU
    through a window (:func:`diffinv.data.medical.load_slice`; DICOM always goes this way) and,
    with ``resize``, scales each whole slice to ``crop`` x ``crop`` instead of cropping it.
    """
    count = _parse_ellipses(str(data), n)
    if count is not None:
        from .data.ellipses import random_phantoms

        if channels != 1:
            raise DiffinvError(f"ellipse phantoms are grayscale, but the model expects {channels} channels")
        if n is not None and n > count:
            raise DiffinvError(f"asked for the first {n} images but {data} has only {count}")
        items = []
        for i in range(count if n is None else n):
            g = _generator(HELD_OUT_SEED_OFFSET + item_seed(seed, i))
            x = random_phantoms(1, size=crop, generator=g)
            items.append(_Item(i, f"{i:04d}_ellipse", f"ellipses:{count}", x))
        return items
    files = _first_files(data, n)
    slices = slices or {}
    items = []
    for i, (f, k) in enumerate(files):
        medical = f.suffix.lower() == ".dcm" or k is not None or f.name.lower().endswith((".nii", ".nii.gz"))
        if medical or slices.get("window") or slices.get("hu_offset") is not None:
            from .data.medical import load_slice

            x, _ = load_slice(f, slices.get("window"), slices.get("hu_offset"), slice_index=k)
            x = x.expand(-1, channels, -1, -1).contiguous()
        else:
            x = load_image(f, channels=channels)
        if slices.get("resize"):
            x = torch.nn.functional.interpolate(
                x, size=(crop, crop), mode="bilinear", antialias=True, align_corners=False
            ).clamp(0, 1)
        else:
            x = crop_image(x, crop, seed, i, str(f))
        stem = f.name[: -len(".nii.gz")] if f.name.lower().endswith(".nii.gz") else f.stem
        label, source = (stem, f.name) if k is None else (f"{stem}_z{k:03d}", f"{f.name}:{k}")
        items.append(_Item(i, f"{i:04d}_{_safe_stem(label)}", source, x))
    return items
