"""Medical and high-bit-depth slices: DICOM, NIfTI, 16-bit PNG/TIFF, ``.npy``; CT display windows.

A CT prior works on images in [0, 1]; CT data comes in Hounsfield units (HU). A *window* of centre
``c`` and width ``w`` maps HU to the prior's range and back:

    u = clip((HU - (c - w / 2)) / w, 0, 1),        HU = c - w / 2 + w u

(the inverse is exact inside the window; values outside it were clipped on the way in).

Readers return the slice as a float64 array ``(H, W)`` in its own units plus a small metadata dict:

- DICOM (``.dcm``, pydicom): ``pixel_array * RescaleSlope + RescaleIntercept`` -> HU;
- NIfTI (``.nii``, ``.nii.gz``, nibabel): voxel values as stored (scaled by the header's
  ``scl_slope`` / ``scl_inter``; CT NIfTI files hold HU), slice ``slice_index`` along the last axis;
- 16-bit PNG/TIFF: the stored integers, minus ``hu_offset`` when given (e.g. 1024 for files that
  store HU + 1024) -> HU; without an offset the values are divided by 65535 (plain [0, 1] images);
- ``.npy``: the array as stored (float), HU when a window is used.

Example
-------
>>> w = parse_window("lung")
>>> w.to_unit(np.array([-1350.0, -600.0, 150.0]))
array([0. , 0.5, 1. ])
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DiffinvError

#: (centre, width) in HU of the usual display windows (radiology conventions).
WINDOW_PRESETS: dict[str, tuple[float, float]] = {
    "lung": (-600.0, 1500.0),
    "soft-tissue": (40.0, 400.0),
    "bone": (400.0, 1800.0),
    "brain": (40.0, 80.0),
}

MEDICAL_SUFFIXES = (".dcm", ".nii", ".nii.gz")


@dataclass(frozen=True)
class Window:
    """A CT display window: HU in ``[center - width / 2, center + width / 2]`` maps onto [0, 1]."""

    center: float
    width: float
    name: str = ""

    def __post_init__(self):
        if not (math.isfinite(self.center) and math.isfinite(self.width)):
            raise DiffinvError(f"window centre and width must be finite, got {self.center}, {self.width}")
        if self.width <= 0:
            raise DiffinvError(f"window width must be > 0, got {self.width}")

    @property
    def low(self) -> float:
        return self.center - self.width / 2

    def to_unit(self, hu):
        """HU -> [0, 1] (clipped). Works on numpy arrays and torch tensors."""
        u = (hu - self.low) / self.width
        return u.clip(0, 1)

    def to_hu(self, u):
        """[0, 1] -> HU (the inverse of :meth:`to_unit` inside the window)."""
        return self.low + self.width * u

    def as_dict(self) -> dict:
        return {"name": self.name or None, "center": self.center, "width": self.width, "units": "HU"}


def parse_window(spec: str) -> Window:
    """A preset name (``lung``, ``soft-tissue``, ``bone``, ``brain``) or ``"CENTER,WIDTH"`` in HU."""
    text = str(spec).strip().lower()
    if text in WINDOW_PRESETS:
        return Window(*WINDOW_PRESETS[text], name=text)
    parts = text.split(",")
    if len(parts) == 2:
        try:
            center, width = float(parts[0]), float(parts[1])
        except ValueError:
            pass
        else:
            return Window(center, width)
    raise DiffinvError(
        f"unknown window {spec!r}: give a preset ({', '.join(WINDOW_PRESETS)}) or CENTER,WIDTH in HU"
    )


def is_medical(path: str | Path) -> bool:
    name = str(path).lower()
    return name.endswith(MEDICAL_SUFFIXES)


def is_nifti(path: str | Path) -> bool:
    return str(path).lower().endswith((".nii", ".nii.gz"))


def slices_of(path: str | Path) -> list[int | None]:
    """The slice indices a folder scan takes from ``path``: every slice (last axis) of a 3-D NIfTI
    volume, ``[None]`` for a file that holds one image (reads only the NIfTI header)."""
    if not is_nifti(path):
        return [None]
    try:
        import nibabel
    except ImportError as exc:
        raise DiffinvError("reading NIfTI needs nibabel: pip install 'diffinv[medical]'") from exc
    try:
        shape = tuple(d for d in nibabel.load(str(path)).shape if d != 1) or (1,)
    except Exception as exc:
        raise DiffinvError(f"cannot read NIfTI file {path}: {' '.join(str(exc).split())}") from None
    return list(range(shape[-1])) if len(shape) == 3 else [None]


def read_dicom(path: str | Path) -> tuple[np.ndarray, dict]:
    """One DICOM slice in HU (RescaleSlope/RescaleIntercept applied); refuses colour and no-pixel files."""
    try:
        import pydicom
    except ImportError as exc:  # an optional dependency
        raise DiffinvError("reading DICOM needs pydicom: pip install 'diffinv[medical]'") from exc
    try:
        ds = pydicom.dcmread(str(path))
    except Exception as exc:
        raise DiffinvError(f"cannot read DICOM file {path}: {' '.join(str(exc).split())}") from None
    if "PixelData" not in ds:
        raise DiffinvError(f"DICOM file {path} has no pixel data")
    if int(getattr(ds, "SamplesPerPixel", 1)) != 1:
        raise DiffinvError(
            f"DICOM file {path} is a colour image ({ds.SamplesPerPixel} samples per pixel); CT slices are gray"
        )
    try:
        pixels = ds.pixel_array
    except Exception as exc:
        raise DiffinvError(f"cannot decode the pixel data of {path}: {' '.join(str(exc).split())}") from None
    if pixels.ndim != 2:
        raise DiffinvError(f"DICOM file {path} holds {pixels.ndim}-D pixel data; one 2-D slice is supported")
    slope = float(getattr(ds, "RescaleSlope", 1.0))
    intercept = float(getattr(ds, "RescaleIntercept", 0.0))
    hu = pixels.astype(np.float64) * slope + intercept
    return hu, {"format": "dicom", "units": "HU", "rescale_slope": slope, "rescale_intercept": intercept}


def read_nifti(path: str | Path, slice_index: int | None = None) -> tuple[np.ndarray, dict]:
    """Slice ``slice_index`` (last axis) of a NIfTI volume, or the image of a 2-D file."""
    try:
        import nibabel
    except ImportError as exc:
        raise DiffinvError("reading NIfTI needs nibabel: pip install 'diffinv[medical]'") from exc
    try:
        img = nibabel.load(str(path))
        data = np.asarray(img.dataobj, dtype=np.float64)  # applies scl_slope / scl_inter
    except Exception as exc:
        raise DiffinvError(f"cannot read NIfTI file {path}: {' '.join(str(exc).split())}") from None
    data = np.squeeze(data) if data.ndim > 3 else data
    if data.ndim == 2:
        if slice_index not in (None, 0):
            raise DiffinvError(f"slice {slice_index} out of range: {path} holds one 2-D slice (index 0)")
        return data, {"format": "nifti", "units": "stored", "slice": 0}
    if data.ndim != 3:
        raise DiffinvError(f"NIfTI file {path} has shape {data.shape}; expected a 2-D slice or a 3-D volume")
    depth = data.shape[-1]
    if slice_index is None:
        raise DiffinvError(
            f"{path} is a volume of {depth} slices: choose one with --slice K (0 <= K < {depth})"
        )
    if not 0 <= slice_index < depth:
        raise DiffinvError(f"slice {slice_index} out of range: {path} has slices 0..{depth - 1}")
    return data[..., slice_index], {"format": "nifti", "units": "stored", "slice": int(slice_index)}


def read_high_bit_depth(path: str | Path, hu_offset: float | None = None) -> tuple[np.ndarray, dict]:
    """A gray PNG/TIFF/.npy slice as stored; ``hu_offset`` turns stored integers into HU."""
    from PIL import Image

    p = Path(path)
    if p.suffix.lower() == ".npy":
        arr = _read_npy_values(p)
    else:
        try:
            with Image.open(p) as im:
                if im.mode not in ("I;16", "I;16B", "I;16L", "I", "L", "F"):
                    raise DiffinvError(f"{p} is a {im.mode} image; CT slices are single-channel gray")
                arr = np.asarray(im, dtype=np.float64)
                bits16 = im.mode.startswith("I")
        except ValueError:
            raise
        except Exception as exc:
            raise DiffinvError(f"cannot read image {p}: {' '.join(str(exc).split())}") from None
        if hu_offset is None:
            return arr / (65535.0 if bits16 else 255.0), {"format": p.suffix.lower()[1:], "units": "unit"}
    arr = arr.reshape(arr.shape[-2:]) if arr.ndim == 3 and 1 in (arr.shape[0], arr.shape[-1]) else arr
    if arr.ndim != 2:
        raise DiffinvError(f"{p} has shape {arr.shape}; expected one gray slice (H, W)")
    if hu_offset is not None:
        return arr - float(hu_offset), {"format": p.suffix.lower()[1:], "units": "HU", "hu_offset": hu_offset}
    return arr, {"format": p.suffix.lower()[1:], "units": "stored"}


def _read_npy_values(p: Path) -> np.ndarray:
    """A numeric ``.npy`` array as float64 values as stored (an int16 HU array stays in HU)."""
    try:
        a = np.load(p, allow_pickle=False)
    except Exception as exc:
        raise DiffinvError(f"cannot read array file {p}: {' '.join(str(exc).split())}") from None
    if not isinstance(a, np.ndarray) or not (
        np.issubdtype(a.dtype, np.integer) or np.issubdtype(a.dtype, np.floating)
    ):
        raise DiffinvError(f"{p} does not hold a numeric array")
    a = a.astype(np.float64)
    if not np.all(np.isfinite(a)):
        raise DiffinvError(f"array file {p} contains NaN or Inf values")
    return a


def read_slice(
    path: str | Path, slice_index: int | None = None, hu_offset: float | None = None
) -> tuple[np.ndarray, dict]:
    """Dispatch on the file name; returns ``(array (H, W) float64, metadata)``."""
    p = Path(path)
    if not p.is_file():
        raise DiffinvError(f"file not found: {p}")
    name = p.name.lower()
    if name.endswith(".dcm"):
        return read_dicom(p)
    if name.endswith((".nii", ".nii.gz")):
        return read_nifti(p, slice_index)
    if slice_index is not None:
        raise DiffinvError(f"--slice applies to NIfTI volumes; {p.name} holds one slice")
    return read_high_bit_depth(p, hu_offset)


def load_slice(
    path: str | Path,
    window: Window | str | None = None,
    hu_offset: float | None = None,
    slice_index: int | None = None,
):
    """Read one slice and map it to a ``(1, 1, H, W)`` float32 tensor in [0, 1] for a prior.

    Data in Hounsfield units (DICOM, or a file read with ``hu_offset``) needs a ``window``; other
    data (NIfTI, ``.npy``) goes through the window when one is given and must already lie in [0, 1]
    otherwise. Returns ``(tensor, info)``; ``info`` holds the reader's metadata and ``window``
    (``Window.as_dict()`` or None), enough to map a restoration back with :func:`to_input_units`.
    """
    import torch

    if isinstance(window, str):
        window = parse_window(window)
    values, meta = read_slice(path, slice_index=slice_index, hu_offset=hu_offset)
    if window is not None:
        unit = window.to_unit(values)
    elif meta["units"] == "HU":
        raise DiffinvError(
            f"{path} holds Hounsfield units: choose a window with --window "
            f"({', '.join(WINDOW_PRESETS)}, or CENTER,WIDTH)"
        )
    elif values.min() < 0 or values.max() > 1:
        raise DiffinvError(
            f"{path} holds values in [{values.min():g}, {values.max():g}], not [0, 1]: give --window "
            "(and --hu-offset for files that store HU + offset) to map them to the prior's range"
        )
    else:
        unit = values
    info = {**meta, "window": None if window is None else window.as_dict()}
    return torch.from_numpy(np.ascontiguousarray(unit, dtype=np.float32))[None, None], info


def to_input_units(x_unit: np.ndarray, info: dict) -> np.ndarray:
    """A restoration in [0, 1] back in the input's units (HU through the same window), float32."""
    w = info.get("window")
    x = np.clip(x_unit, 0, 1)
    if w is None:
        return x.astype(np.float32)
    return Window(w["center"], w["width"]).to_hu(x).astype(np.float32)
