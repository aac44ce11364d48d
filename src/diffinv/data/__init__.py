"""Data utilities: image/array I/O."""

from .io import load_image, save_image, save_npy_atomic

__all__ = ["load_image", "save_image", "save_npy_atomic"]
