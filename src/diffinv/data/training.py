"""Training streams for ``diffinv train``: random crops of an image folder held in memory, or
ellipse phantoms generated on the fly; every batch is drawn from an explicit generator, so a
resumed run draws exactly what an uninterrupted one would."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image

from ..errors import DiffinvError

if TYPE_CHECKING:
    from .augment import Augmentation

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".dcm", ".nii", ".nii.gz")


def load_folder(folder: str, channels: int, window: str = "", hu_offset: float | None = None):
    """Every image of ``folder`` (every slice of a NIfTI volume) as a PIL image with ``channels``
    channels; CT in HU goes through ``window`` to 8 bits like the rest. Yields ``(path, image)``."""
    files = sorted(p for p in Path(folder).iterdir() if p.name.lower().endswith(IMAGE_EXTENSIONS))
    if not files:
        raise DiffinvError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in {folder}")
    mode = "RGB" if channels == 3 else "L"
    for path in files:
        medical = path.name.lower().endswith((".dcm", ".nii", ".nii.gz"))
        if medical or window or hu_offset is not None:
            from .medical import load_slice, slices_of

            for k in slices_of(path):
                unit, _ = load_slice(path, window or None, hu_offset, slice_index=k)
                arr = (unit[0, 0].numpy() * 255).round().astype(np.uint8)
                yield path, Image.fromarray(arr).convert(mode)
            continue
        try:
            with Image.open(path) as im:
                yield path, im.convert(mode)
        except OSError as exc:
            raise DiffinvError(f"cannot read training image {path}: {exc}") from exc


class ImageFolderCrops:
    """Random crops (and horizontal flips) from every image of a folder, held in memory as uint8.

    Each image is also kept at half resolution, so crops see both fine texture and larger structure.
    """

    def __init__(
        self, folder: str, size: int, channels: int, window: str = "", hu_offset: float | None = None
    ):
        self.size, self.images, files = size, [], []
        for path, im in load_folder(folder, channels, window, hu_offset):
            self._add(im, size, channels)
            files.append(path)
        if not self.images:
            raise DiffinvError(f"no image in {folder} is at least {size}x{size}")
        self.files = sorted(set(files))

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


class AugmentedWholeImages:
    """Whole images of a folder (centre square), each under a random ``Augmentation`` (affine map at
    its own resolution, area resize to ``size``, horizontal flip, intensity map); see ``augment.py``."""

    def __init__(
        self,
        folder: str,
        size: int,
        channels: int,
        augmentation: Augmentation,
        window: str = "",
        hu_offset: float | None = None,
    ):
        self.size, self.aug, self.images, files = size, augmentation, [], []
        for path, im in load_folder(folder, channels, window, hu_offset):
            if min(im.width, im.height) >= size:
                arr = np.asarray(im).reshape(im.height, im.width, channels)
                self.images.append(torch.from_numpy(arr.copy()).permute(2, 0, 1))
                files.append(path)
        if not self.images:
            raise DiffinvError(f"no image in {folder} is at least {size}x{size}")
        self.files = sorted(set(files))

    def batch(self, n: int, g: torch.Generator) -> torch.Tensor:
        idx = torch.randint(len(self.images), (n,), generator=g)
        out = []
        for i in idx.tolist():
            image = self.aug.warp(self.images[i].float() / 255.0, self.size, g)
            out.append(image.flip(-1) if bool(torch.rand(1, generator=g) < 0.5) else image)
        return self.aug.intensity(torch.stack(out), g)


class EllipseStream:
    """Random ellipse phantoms (``diffinv.data.ellipses``) with random flips."""

    def __init__(self, size: int):
        self.size = size

    def batch(self, n: int, g: torch.Generator) -> torch.Tensor:
        from .ellipses import random_phantoms

        return random_phantoms(n, self.size, generator=g)


def training_stream(
    data: str,
    size: int,
    channels: int,
    window: str = "",
    hu_offset: float | None = None,
    augment: str = "",
) -> ImageFolderCrops | AugmentedWholeImages | EllipseStream:
    """``EllipseStream`` for ``data == "ellipses"`` (1 channel); for a folder, ``AugmentedWholeImages``
    when ``augment`` names an augmentation (``augment.Augmentation.parse``), else ``ImageFolderCrops``."""
    if data == "ellipses":
        if channels != 1:
            raise DiffinvError("ellipse phantoms have 1 channel: use --channels 1")
        if augment:
            raise DiffinvError("--augment applies to image folders, not to generated ellipse phantoms")
        return EllipseStream(size)
    if augment:
        from .augment import Augmentation

        return AugmentedWholeImages(data, size, channels, Augmentation.parse(augment), window, hu_offset)
    return ImageFolderCrops(data, size, channels, window, hu_offset)
