"""Uploads of the web app: checked (type, bytes, pixels) before anything decodes them, copied into
the session's folder, shown as a preview; a mask painted in the browser written as a mask PNG.

Every check raises :class:`InputError` (a ``ValueError``) with one line for the page. Decoding
is left to the library (:func:`diffinv.data.io.load_image`, :mod:`diffinv.data.medical`), which
refuses NaN, unreadable data and the rest with its own one-line messages; here only what must be
known before it reads a file: that it is small enough to read at all.
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DiffinvError
from . import options

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
SUFFIXES = (*IMAGE_SUFFIXES, ".npy", ".dcm", ".nii", ".nii.gz")


class InputError(DiffinvError):
    """A bad upload or setting: one line for the page."""


@dataclass
class Upload:
    """An input file checked and copied into the job's folder."""

    path: Path  # the copy
    name: str  # the user's file name
    suffix: str
    height: int
    width: int

    @property
    def medical(self) -> bool:
        return self.suffix in (".dcm", ".nii", ".nii.gz")


def suffix_of(name: str) -> str:
    low = name.lower()
    return ".nii.gz" if low.endswith(".nii.gz") else Path(low).suffix


def safe_stem(name: str) -> str:
    """A file stem safe on any file system (it names the outputs): letters, digits, ``_-``."""
    stem = Path(name).name
    suffix = suffix_of(stem)
    stem = stem[: len(stem) - len(suffix)] if suffix else stem
    stem = re.sub(r"[^A-Za-z0-9_-]+", "_", stem).strip("_")[:48]
    return stem or "input"


def image_size(path: Path, suffix: str, what: str = "file") -> tuple[int, int]:
    """(height, width) from the file's header, without decoding its pixels."""
    try:
        if suffix in IMAGE_SUFFIXES:
            from PIL import Image

            try:
                with Image.open(path) as im:
                    w, h = im.size
            except Image.DecompressionBombError as e:  # over twice Pillow's own limit: never decoded
                n = re.search(r"\((\d+) pixels\)", str(e))
                size = f" ({int(n[1]) / 1e6:.0f} megapixels)" if n else ""
                raise InputError(
                    f"{what}{size} is over the app's {options.MAX_INPUT_PIXELS / 1e6:.0f}-megapixel limit; "
                    "downscale or crop it"
                ) from None
        elif suffix == ".npy":
            a = np.load(path, mmap_mode="r", allow_pickle=False)
            if a.ndim == 2 or (a.ndim == 3 and a.shape[2] in (1, 3)):
                h, w = a.shape[:2]
            elif a.ndim == 3:
                h, w = a.shape[1:]
            else:
                raise InputError(f"{what}: an array of shape {tuple(a.shape)} is not an image or sinogram")
        elif suffix == ".dcm":
            import pydicom

            ds = pydicom.dcmread(path, stop_before_pixels=True)
            h, w = int(ds.Rows), int(ds.Columns)
        else:  # NIfTI: one slice of the last axis is restored
            import nibabel

            shape = nibabel.load(str(path)).shape
            if len(shape) < 2:
                raise InputError(f"{what}: a NIfTI file of shape {shape} holds no image")
            h, w = shape[:2]
    except InputError:
        raise
    except ImportError as e:
        raise InputError(
            f"{what}: reading {suffix} files needs {e.name} (pip install 'diffinv[medical]')"
        ) from None
    except Exception as e:  # Pillow / numpy / pydicom / nibabel raise many kinds for bad files
        kind = "an image" if suffix in IMAGE_SUFFIXES else f"a valid {suffix} file"
        why = " ".join(str(e).replace(str(path), Path(path).name).split())[:160]  # (no server paths)
        raise InputError(f"{what} is not {kind} ({why})") from None
    return int(h), int(w)


def check_upload(src: str | Path, name: str | None = None, what: str | None = None) -> tuple[str, int, int]:
    """Check an uploaded file before it is read: type, size in bytes and pixels; ``(suffix, H, W)``."""
    p = Path(src)
    name = Path(name or p.name).name
    what = what or name
    if not p.is_file():
        raise InputError(f"{what}: the upload is gone (upload it again)")
    suffix = suffix_of(name)
    if suffix not in SUFFIXES:
        raise InputError(
            f"{what}: not a supported file type (an image {', '.join(IMAGE_SUFFIXES)}, "
            "a .npy array or sinogram, a DICOM .dcm or NIfTI .nii/.nii.gz slice)"
        )
    size = p.stat().st_size
    if size > options.MAX_UPLOAD_BYTES:
        raise InputError(
            f"{what}: {size / 2**20:.0f} MB is over the app's {options.MAX_UPLOAD_BYTES // 2**20} MB limit"
        )
    if size == 0:
        raise InputError(f"{what}: the file is empty")
    h, w = image_size(p, suffix, what)
    if h * w > options.MAX_INPUT_PIXELS:
        raise InputError(
            f"{what}: {w}x{h} ({h * w / 1e6:.0f} megapixels) is over the app's "
            f"{options.MAX_INPUT_PIXELS / 1e6:.0f}-megapixel limit; downscale or crop it"
        )
    if h < 1 or w < 1:
        raise InputError(f"{what}: the image is empty ({w}x{h})")
    return suffix, h, w


def take_upload(src: str | Path, name: str | None, folder: Path, what: str | None = None) -> Upload:
    """:func:`check_upload`, then copy the file into ``folder`` under a safe name."""
    name = Path(name or Path(src).name).name
    suffix, h, w = check_upload(src, name, what)
    dest = folder / f"{safe_stem(name)}{suffix}"
    shutil.copyfile(src, dest)
    return Upload(dest, name, suffix, h, w)


def example_file(label: str, folder: Path) -> Upload:
    """A bundled example copied into ``folder`` (the phantom is drawn on the fly)."""
    ex = options.EXAMPLES.get(label)
    if ex is None:
        raise InputError(f"unknown example {label!r}; choose one of: {', '.join(options.EXAMPLES)}")
    if ex.file is None:
        from ..data.ellipses import shepp_logan
        from ..data.io import save_image

        dest = save_image(shepp_logan(64), folder / "shepp_logan.png")
        return Upload(dest, dest.name, ".png", 64, 64)
    return take_upload(options.IMAGES / ex.file, ex.file, folder)


def preview_array(up: Upload, hu_offset: float | None = None, window: str | None = None) -> np.ndarray:
    """The input as an 8-bit (H, W) or (H, W, 3) array for display (medical data through the window
    when one is given, else min-max scaled)."""
    from ..data import medical
    from ..data.io import load_image

    win = None if window in (None, "", "none") else medical.parse_window(window)
    if up.medical or win is not None or hu_offset is not None:
        values, _ = medical.read_slice(up.path, hu_offset=hu_offset)
        a = win.to_unit(values) if win is not None else _minmax(values)
    else:
        x = load_image(up.path)[0].numpy().transpose(1, 2, 0)
        a = x if 0 <= x.min() and x.max() <= 1 else _minmax(x)
        a = a[..., 0] if a.shape[2] == 1 else a
    return (np.clip(a, 0, 1) * 255).round().astype(np.uint8)


def _minmax(a: np.ndarray) -> np.ndarray:
    lo, hi = float(np.min(a)), float(np.max(a))
    return (a - lo) / (hi - lo) if hi > lo else np.zeros_like(a, dtype=np.float64)


def write_preview(up: Upload, dest: Path, hu_offset: float | None = None, window: str | None = None) -> Path:
    from PIL import Image

    Image.fromarray(preview_array(up, hu_offset, window)).save(dest)
    return dest


def brush_mask(editor, height: int, width: int, dest: Path) -> Path | None:
    """The mask painted in the image editor (painted = missing) as a PNG of ``height`` x ``width``
    (white = keep), or None when nothing is painted. ``editor``: Gradio's ImageEditor value,
    ``{"background": ..., "layers": [RGBA arrays], "composite": ...}``."""
    from PIL import Image

    layers = (editor or {}).get("layers") if isinstance(editor, dict) else None
    painted = None
    for layer in layers or []:
        if layer is None:
            continue
        a = np.asarray(layer)
        if a.ndim != 3 or a.shape[2] != 4:
            continue
        hit = a[..., 3] > 0
        painted = hit if painted is None else painted | (hit if hit.shape == painted.shape else painted)
    if painted is None or not painted.any():
        return None
    keep = Image.fromarray(np.where(painted, 0, 255).astype(np.uint8))
    if keep.size != (width, height):
        keep = keep.resize((width, height), Image.NEAREST)
    keep.save(dest)
    return dest


def resize_mask(src: Path, height: int, width: int, dest: Path) -> Path:
    """A mask image scaled (nearest) to ``height`` x ``width`` (when the input is resized too)."""
    from PIL import Image

    with Image.open(src) as im:
        im.convert("L").resize((width, height), Image.NEAREST).save(dest)
    return dest
