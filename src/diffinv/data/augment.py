"""Augmentation for training a prior on a small image set: whole images under a random affine map
(rotation, zoom, shift) resampled at their own resolution, area-resized to the training size, and
a random intensity map (contrast, brightness, gamma).

Why whole images, resized by area: a prior for CT is used on whole slices box-resized to its size
(``diffinv restore --resize``), so its training images should look the same; warping at the source
resolution and then averaging keeps the texture of that resize, where warping a 64x64 image would
blur it. The intensity map stands in for the window and scanner differences between a training
source (one windowing, one scanner family) and other patients' slices.

Example:
    >>> aug = Augmentation.parse("ct")
    >>> aug.rotate_deg, aug.zoom
    (10.0, 0.1)
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..errors import DiffinvError

PRESETS = {
    # small rotations and zooms of a centred slice; +-10 % contrast, +-4 % level, gamma 0.83..1.2
    "ct": "rotate=10,zoom=0.1,shift=0.04,contrast=0.1,brightness=0.04,gamma=0.2",
    "geometric": "rotate=10,zoom=0.1,shift=0.04",
}


@dataclass(frozen=True)
class Augmentation:
    """Ranges of the random maps; each is drawn uniformly per image.

    - rotation angle in [-rotate_deg, rotate_deg] degrees;
    - zoom factor s in [1 - zoom, 1 + zoom] (s > 1 magnifies);
    - shift in [-shift, shift] of the image side, per axis;
    - intensity x -> clip(0.5 + a (x^g - 0.5) + b, 0, 1) with a in [1 - contrast, 1 + contrast],
      b in [-brightness, brightness], log g uniform in [-log(1 + gamma), log(1 + gamma)].
    """

    rotate_deg: float = 0.0
    zoom: float = 0.0
    shift: float = 0.0
    contrast: float = 0.0
    brightness: float = 0.0
    gamma: float = 0.0

    _keys = {"rotate": "rotate_deg", "zoom": "zoom", "shift": "shift", "contrast": "contrast",
             "brightness": "brightness", "gamma": "gamma"}  # fmt: skip

    @classmethod
    def parse(cls, spec: str) -> Augmentation:
        """``"ct"``, ``"geometric"``, or ``"rotate=10,zoom=0.1,..."`` (keys: rotate, zoom, shift,
        contrast, brightness, gamma). An unknown key, a non-number or an impossible range raises."""
        text = PRESETS.get(spec.strip(), spec)
        values = {}
        for part in filter(None, (p.strip() for p in text.split(","))):
            key, sep, value = part.partition("=")
            if not sep or key.strip() not in cls._keys:
                raise DiffinvError(
                    f"augment: {part!r} is not KEY=VALUE with KEY one of {', '.join(cls._keys)} "
                    f"(or a preset: {', '.join(PRESETS)})"
                )
            try:
                number = float(value)
            except ValueError:
                raise DiffinvError(f"augment: {key.strip()}={value!r} is not a number") from None
            if not math.isfinite(number) or number < 0:
                raise DiffinvError(f"augment: {key.strip()} must be a finite number >= 0, got {value}")
            values[cls._keys[key.strip()]] = number
        if not values:
            raise DiffinvError(f"augment: {spec!r} names no augmentation (presets: {', '.join(PRESETS)})")
        aug = cls(**values)
        if aug.zoom >= 1 or aug.contrast >= 1 or aug.rotate_deg > 180:
            raise DiffinvError("augment: need zoom < 1, contrast < 1 and rotate <= 180")
        return aug

    def describe(self) -> str:
        return ", ".join(f"{f.name} {getattr(self, f.name):g}" for f in dataclasses.fields(self))

    def warp(self, image: torch.Tensor, size: int, g: torch.Generator) -> torch.Tensor:
        """One (C, H, W) image in [0, 1] -> (C, size, size): centre square, random affine map at the
        image's own resolution (border pixels repeated), area-resized to ``size``."""
        c, h, w = image.shape
        side = min(h, w)
        top, left = (h - side) // 2, (w - side) // 2
        square = image[:, top : top + side, left : left + side].unsqueeze(0)
        u = torch.rand(4, generator=g, dtype=torch.float64) * 2 - 1  # four draws in [-1, 1]
        angle = math.radians(self.rotate_deg * float(u[0]))
        scale = 1 + self.zoom * float(u[1])
        dx, dy = 2 * self.shift * float(u[2]), 2 * self.shift * float(u[3])  # grid units: side = 2
        cos, sin = math.cos(angle) / scale, math.sin(angle) / scale
        theta = torch.tensor([[cos, -sin, dx], [sin, cos, dy]], dtype=square.dtype).unsqueeze(0)
        grid = F.affine_grid(theta, list(square.shape), align_corners=False)
        warped = F.grid_sample(square, grid, mode="bilinear", padding_mode="border", align_corners=False)
        return F.interpolate(warped, size=(size, size), mode="area")[0]

    def intensity(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        """The random intensity map of the class docstring, one draw per image of the batch."""
        n = x.shape[0]
        u = torch.rand(3, n, generator=g, dtype=torch.float64).to(x.dtype) * 2 - 1
        a = (1 + self.contrast * u[0]).view(n, 1, 1, 1)
        b = (self.brightness * u[1]).view(n, 1, 1, 1)
        gam = torch.exp(math.log1p(self.gamma) * u[2]).view(n, 1, 1, 1)
        return (0.5 + a * (x.clamp(0, 1) ** gam - 0.5) + b).clamp(0, 1)
