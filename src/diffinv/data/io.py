"""Image I/O: load images/arrays as ``(1, C, H, W)`` float32 tensors, save PNG/NPY atomically.

Supported inputs
----------------
* ``.png``, ``.jpg``/``.jpeg``, ``.tif``/``.tiff``, ``.bmp`` through Pillow: 8-bit and 16-bit
  grayscale, RGB, palette (converted to RGB), bilevel, and images with alpha (the alpha channel is
  dropped). Integer samples are scaled by their maximum (255 or 65535) into [0, 1]; 32-bit float
  TIFFs are kept as they are. (Pillow reads 16-bit RGB files as 8-bit RGB.)
* ``.npy`` arrays of shape ``(H, W)``, ``(H, W, C)`` or ``(C, H, W)`` with ``C`` in {1, 3}. An array
  whose first and last axes both have size 1 or 3 is read channels-last. Integer arrays are
  divided by their dtype's maximum (so uint8 and uint16 land in [0, 1]; negative values of signed
  types stay negative), booleans become {0, 1}, and float arrays must be finite but are otherwise
  kept as they are -- values outside [0, 1] are not clipped: the caller decides.

``channels=1`` converts RGB to gray with the ITU-R BT.601 luma weights (0.299, 0.587, 0.114);
``channels=3`` replicates a gray channel. Every failure (missing file, unsupported extension,
unreadable or corrupt data, bad shape) raises a one-line ``ValueError`` naming the file.

Writes go to a temporary file in the destination directory that is then renamed over the target
(:func:`os.replace`), so a reader never sees a partially written file and a failed write leaves
nothing behind.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import IO

import numpy as np
import torch

from ..errors import DiffinvError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
ARRAY_SUFFIXES = (".npy",)
LUMA_BT601 = (0.299, 0.587, 0.114)


# ------------------------------------------------------------------------------------ loading
def load_image(path: str | os.PathLike, channels: int | None = None) -> torch.Tensor:
    """Read an image or ``.npy`` array as a float32 tensor of shape ``(1, C, H, W)``.

    Image files land in [0, 1]; ``.npy`` float arrays keep their values (see the module docstring).
    ``channels`` is ``None`` (keep), 1 (BT.601 gray) or 3 (RGB, gray replicated).
    """
    if channels not in (None, 1, 3):
        raise DiffinvError(f"channels must be None, 1 or 3, got {channels!r}")
    p = Path(path)
    if not p.exists():
        raise DiffinvError(f"image file not found: {p}")
    if not p.is_file():
        raise DiffinvError(f"not a regular file: {p}")
    suffix = p.suffix.lower()
    if suffix in ARRAY_SUFFIXES:
        arr = _read_npy(p)
    elif suffix in IMAGE_SUFFIXES:
        arr = _read_pil(p)
    else:
        raise DiffinvError(
            f"unsupported file type {p.suffix or '(no extension)'!r} for {p}; "
            f"expected one of {', '.join(IMAGE_SUFFIXES + ARRAY_SUFFIXES)}"
        )
    # arr: float64 (H, W, C), C in {1, 3}
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise DiffinvError(f"empty image {arr.shape[0]}x{arr.shape[1]} in {p}")
    if channels == 1 and arr.shape[2] == 3:
        arr = arr @ np.asarray(LUMA_BT601)[:, None]
    elif channels == 3 and arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    x = torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1), dtype=np.float32))
    return x.unsqueeze(0)


def _read_pil(p: Path) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(p) as im:
            im.load()
            arr = _pil_to_array(im)
    except Exception as e:  # Pillow raises many types for corrupt data (OSError, SyntaxError, ...)
        raise DiffinvError(f"cannot read image file {p}: {_oneline(e)}") from e
    if not np.all(np.isfinite(arr)):
        raise DiffinvError(f"image file {p} contains NaN or Inf values")
    return arr


def _pil_to_array(im) -> np.ndarray:
    """A Pillow image as float64 ``(H, W, C)``, C in {1, 3}, integer data scaled to [0, 1]."""
    mode = im.mode
    if mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    elif mode in ("1", "L", "LA", "La"):
        im = im.convert("L")
    elif mode in ("RGBA", "RGBa", "RGBX", "CMYK", "YCbCr", "LAB", "HSV"):
        im = im.convert("RGB")
    mode = im.mode
    if mode in ("RGB", "RGBA"):
        a = np.asarray(im, dtype=np.float64)[..., :3] / 255.0
    elif mode == "L":
        a = np.asarray(im, dtype=np.float64)[..., None] / 255.0
    elif mode.startswith("I;16"):
        a = np.asarray(im).astype(np.float64)[..., None] / 65535.0
    elif mode == "I":
        a = np.asarray(im).astype(np.float64)
        if a.size and a.min() < 0:
            raise DiffinvError("unsupported 32-bit integer image with negative values")
        # 16-bit files are often decoded as 32-bit "I"; only wider data use the 32-bit range.
        a = a / (65535.0 if a.size == 0 or a.max() <= 65535 else 4294967295.0)
        a = a[..., None]
    elif mode == "F":
        a = np.asarray(im, dtype=np.float64)[..., None]
    else:
        raise DiffinvError(f"unsupported image mode {mode!r}")
    return a


def _read_npy(p: Path) -> np.ndarray:
    try:
        a = np.load(p, allow_pickle=False)
    except Exception as e:  # corrupt header, truncated data, pickled objects, ...
        raise DiffinvError(f"cannot read array file {p}: {_oneline(e)}") from e
    if not isinstance(a, np.ndarray):
        raise DiffinvError(f"cannot read array file {p}: not a single array")
    if a.dtype == np.bool_:
        a = a.astype(np.float64)
    elif np.issubdtype(a.dtype, np.integer):
        a = a.astype(np.float64) / float(np.iinfo(a.dtype).max)
    elif np.issubdtype(a.dtype, np.floating):
        a = a.astype(np.float64)
        if not np.all(np.isfinite(a)):
            raise DiffinvError(f"array file {p} contains NaN or Inf values")
    else:
        raise DiffinvError(f"unsupported array dtype {a.dtype} in {p} (expected integer, bool or float)")
    if a.ndim == 2:
        return a[:, :, None]
    if a.ndim == 3:
        if a.shape[2] in (1, 3):
            return a
        if a.shape[0] in (1, 3):
            return a.transpose(1, 2, 0)
        raise DiffinvError(
            f"array of shape {a.shape} in {p} has no channel axis of size 1 or 3 (first or last)"
        )
    raise DiffinvError(f"array in {p} has rank {a.ndim}, expected 2 (H, W) or 3 (H, W, C) / (C, H, W)")


def _oneline(e: BaseException) -> str:
    msg = " ".join(str(e).split())
    return f"{type(e).__name__}: {msg}" if msg else type(e).__name__


# ------------------------------------------------------------------------------------ saving
def _atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], None]) -> Path:
    """Write ``path`` through ``write(fileobj)`` via a temp file in the same directory + rename."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.parent / f".{p.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, p)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return p


def save_image(x: torch.Tensor, path: str | os.PathLike) -> Path:
    """Save a ``(C, H, W)`` or ``(1, C, H, W)`` tensor (C in {1, 3}) as an 8-bit PNG, atomically.

    Values are clamped to [0, 1] and rounded to ``k / 255``; parent directories are created. The
    tensor is validated before anything is written, and a failed write leaves no file behind.
    Returns the path written.
    """
    from PIL import Image

    p = Path(path)
    if p.suffix.lower() != ".png":
        raise DiffinvError(f"save_image writes PNG files; use a .png path (got {p})")
    if not isinstance(x, torch.Tensor):
        raise DiffinvError(f"save_image expects a torch.Tensor, got {type(x).__name__}")
    t = x.detach()
    if t.dim() == 4 and t.shape[0] == 1:
        t = t[0]
    if t.dim() != 3 or t.shape[0] not in (1, 3) or t.shape[1] == 0 or t.shape[2] == 0:
        raise DiffinvError(
            f"save_image expects a (C, H, W) or (1, C, H, W) tensor with C in 1, 3; got {tuple(x.shape)}"
        )
    if t.is_complex():
        raise DiffinvError("save_image cannot save a complex tensor")
    t = t.to(device="cpu", dtype=torch.float64)
    if not torch.isfinite(t).all():
        raise DiffinvError(f"cannot save image with NaN or Inf values to {p}")
    a = (t.clamp(0.0, 1.0) * 255.0).round().to(torch.uint8).permute(1, 2, 0).numpy()
    im = Image.fromarray(np.ascontiguousarray(a[:, :, 0] if a.shape[2] == 1 else a))  # L / RGB
    return _atomic_write(p, lambda f: im.save(f, format="PNG"))


def save_npy_atomic(array: np.ndarray | torch.Tensor, path: str | os.PathLike) -> Path:
    """Save an array (or tensor, moved to CPU) as ``.npy`` at exactly ``path``, atomically."""
    if isinstance(array, torch.Tensor):
        array = array.detach().cpu().numpy()
    a = np.asarray(array)
    if a.dtype == object:
        raise DiffinvError("save_npy_atomic cannot save object arrays")
    return _atomic_write(path, lambda f: np.save(f, a, allow_pickle=False))
