"""Training streams for ``diffinv train``: random crops of an image folder held in memory, or
ellipse phantoms generated on the fly; every batch is drawn from an explicit generator, so a
resumed run draws exactly what an uninterrupted one would."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..errors import DiffinvError


class ImageFolderCrops:
    """Random crops (and horizontal flips) from every image of a folder, held in memory as uint8.

    Each image is also kept at half resolution, so crops see both fine texture and larger structure.
    """

    extensions = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".dcm", ".nii", ".nii.gz")

    def __init__(
        self, folder: str, size: int, channels: int, window: str = "", hu_offset: float | None = None
    ):
        files = sorted(p for p in Path(folder).iterdir() if p.name.lower().endswith(self.extensions))
        if not files:
            raise DiffinvError(f"no images ({', '.join(self.extensions)}) in {folder}")
        self.size, self.images = size, []
        for path in files:
            medical = path.name.lower().endswith((".dcm", ".nii", ".nii.gz"))
            if medical or window or hu_offset is not None:
                from .medical import load_slice, slices_of  # HU through the window, to 8 bits like the rest

                for k in slices_of(path):  # every slice of a NIfTI volume
                    unit, _ = load_slice(path, window or None, hu_offset, slice_index=k)
                    arr = (unit[0, 0].numpy() * 255).round().astype(np.uint8)
                    self._add(Image.fromarray(arr).convert("RGB" if channels == 3 else "L"), size, channels)
                continue
            try:
                with Image.open(path) as im:
                    self._add(im.convert("RGB" if channels == 3 else "L"), size, channels)
            except OSError as exc:
                raise DiffinvError(f"cannot read training image {path}: {exc}") from exc
        if not self.images:
            raise DiffinvError(f"no image in {folder} is at least {size}x{size}")
        self.files = files

    def _add(self, im: Image.Image, size: int, channels: int) -> None:
        """Keep ``im`` at full and half resolution (each where it is at least ``size`` pixels)."""
        for scale in (1.0, 0.5):
            w, h = int(im.width * scale), int(im.height * scale)
            if min(w, h) >= size:
                arr = np.asarray(im.resize((w, h), Image.BICUBIC) if scale != 1 else im)
                self.images.append(torch.from_numpy(arr.reshape(h, w, channels).copy()))

    def batch(self, n: int, g: torch.Generator) -> torch.Tensor:
        idx = torch.randint(len(self.images), (n,), generator=g)
        out = []
        for i in idx.tolist():
            im = self.images[i]
            top = int(torch.randint(im.shape[0] - self.size + 1, (1,), generator=g))
            left = int(torch.randint(im.shape[1] - self.size + 1, (1,), generator=g))
            crop = im[top : top + self.size, left : left + self.size].permute(2, 0, 1)
            if bool(torch.rand(1, generator=g) < 0.5):
                crop = crop.flip(-1)
            out.append(crop)
        return torch.stack(out).float() / 255.0


class EllipseStream:
    """Random ellipse phantoms (``diffinv.data.ellipses``) with random flips."""

    def __init__(self, size: int):
        self.size = size

    def batch(self, n: int, g: torch.Generator) -> torch.Tensor:
        from .ellipses import random_phantoms

        return random_phantoms(n, self.size, generator=g)


def training_stream(
    data: str, size: int, channels: int, window: str = "", hu_offset: float | None = None
) -> ImageFolderCrops | EllipseStream:
    """``EllipseStream`` for ``data == "ellipses"`` (1 channel), else ``ImageFolderCrops`` of the folder."""
    if data == "ellipses":
        if channels != 1:
            raise DiffinvError("ellipse phantoms have 1 channel: use --channels 1")
        return EllipseStream(size)
    return ImageFolderCrops(data, size, channels, window, hu_offset)
