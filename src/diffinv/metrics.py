"""Image quality metrics on (B, C, H, W) tensors in [0, 1]; each returns one value per image.

* PSNR = 10 log10(data_range^2 / MSE).
* SSIM (Wang et al. 2004) with an 11x11 Gaussian window (sigma 1.5), K1 = 0.01, K2 = 0.03, averaged
  over pixels (valid region, no padding) and channels: the settings of
  ``skimage.metrics.structural_similarity(gaussian_weights=True, sigma=1.5,
  use_sample_covariance=False, data_range=1, channel_axis=0)``, which the tests check against.
* consistency = ||A x - y|| / ||y||, how well a restoration explains its measurement.
* LPIPS v0.1 "alex" (Zhang et al. 2018): a learned perceptual distance, lower is closer; see
  :mod:`diffinv.lpips` (weights ship with the package, loaded on first use).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .errors import DiffinvError


def _check_pair(x: torch.Tensor, ref: torch.Tensor) -> None:
    if x.shape != ref.shape or x.dim() != 4:
        raise DiffinvError(
            f"expected two (B, C, H, W) tensors of the same shape, got {tuple(x.shape)}, {tuple(ref.shape)}"
        )


def psnr(x: torch.Tensor, ref: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB, per image (inf for identical images)."""
    _check_pair(x, ref)
    mse = (x.double() - ref.double()).pow(2).flatten(1).mean(1)
    return 10 * torch.log10(data_range**2 / mse)


def _gaussian_window(size: int, sigma: float, dtype, device) -> torch.Tensor:
    r = torch.arange(size, dtype=dtype, device=device) - (size - 1) / 2
    g = torch.exp(-(r**2) / (2 * sigma**2))
    g = g / g.sum()
    return g


def ssim(
    x: torch.Tensor, ref: torch.Tensor, data_range: float = 1.0, win: int = 11, sigma: float = 1.5
) -> torch.Tensor:
    """Structural similarity per image (mean over channels and valid window positions)."""
    _check_pair(x, ref)
    B, C, H, W = x.shape
    if min(H, W) < win:
        raise DiffinvError(f"SSIM needs images of at least {win}x{win}, got {H}x{W}")
    a, b = x.double(), ref.double()
    g = _gaussian_window(win, sigma, a.dtype, a.device)

    def blur(t):
        t = F.conv2d(t.reshape(B * C, 1, H, W), g.view(1, 1, 1, -1))
        return F.conv2d(t, g.view(1, 1, -1, 1))

    mu_a, mu_b = blur(a), blur(b)
    saa = blur(a * a) - mu_a**2
    sbb = blur(b * b) - mu_b**2
    sab = blur(a * b) - mu_a * mu_b
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    s = ((2 * mu_a * mu_b + c1) * (2 * sab + c2)) / ((mu_a**2 + mu_b**2 + c1) * (saa + sbb + c2))
    return s.reshape(B, C, -1).mean((1, 2))


def consistency(op, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Relative measurement residual ||A x - y|| / ||y|| per image."""
    r = (op.A(x) - y).flatten(1).norm(dim=1)
    return r / y.flatten(1).norm(dim=1).clamp_min(torch.finfo(y.dtype).tiny)


def lpips(x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """LPIPS v0.1 (AlexNet) perceptual distance per image; needs H, W >= 31 (see :mod:`diffinv.lpips`)."""
    from .lpips import lpips as _lpips  # imported on first use; its 10 MB weights load on first call

    _check_pair(x, ref)
    return _lpips(x, ref)
