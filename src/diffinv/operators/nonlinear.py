"""Nonlinear forward models ``y = F(x) + sigma_y n`` for the solvers that accept them (DAPS, DPS).

A :class:`NonlinearOperator` has what those solvers need and nothing more: ``forward(x)``
(differentiable with autograd), ``in_shape`` / ``out_shape``, ``name``, ``measure(x, sigma_y,
generator)`` and ``vjp(x, v) = (dF/dx)^T v``. It has no adjoint, pseudo-inverse or SVD, so every
method that needs linearity (DDNM, DDRM, PiGDM, ..., the classical ones) refuses it in
``Solver.check_operator``. It is not a degradation spec of ``operators.from_spec`` (build it
directly) and the tiling does not window it.

:class:`PhaseRetrieval` is Fourier phase retrieval, the nonlinear problem of the DAPS paper
(Zhang et al. 2025, Sec. 5): each channel is zero-padded to ``oversample`` times its size (centred)
and the magnitude of its orthonormal 2-D DFT is measured,

    y_c = | F_2D( pad(x_c) ) |,     F_2D with norm="ortho" (so ||F_2D v|| = ||v||).

Its gradient is undefined where a Fourier coefficient is exactly 0 (not the case for images with a
positive mean, whose DC term is positive); autograd returns 0 there.

Example
-------
>>> op = PhaseRetrieval((1, 8, 8), oversample=2.0)
>>> op.out_shape
(1, 16, 16)
>>> y = op.measure(torch.rand(2, 1, 8, 8), sigma_y=0.05, generator=torch.Generator().manual_seed(0))
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..errors import DiffinvError
from .base import Shape, add_gaussian_noise, check_sigma, check_tensor

__all__ = ["NonlinearOperator", "PhaseRetrieval", "is_nonlinear"]


def is_nonlinear(op) -> bool:
    """True for a :class:`NonlinearOperator` (solvers use it to choose the data-fit path)."""
    return isinstance(op, NonlinearOperator)


class NonlinearOperator(nn.Module):
    """A differentiable forward model ``F: R^{in_shape} -> R^{out_shape}``, batched over dim 0.

    Subclasses implement :meth:`_forward` with torch operations (autograd gives the gradients) and
    set ``name``. Device and dtype follow the input.
    """

    nonlinear = True
    has_svd = False

    def __init__(self, in_shape: Shape, out_shape: Shape, name: str):
        super().__init__()
        self.in_shape: Shape = tuple(int(s) for s in in_shape)
        self.out_shape: Shape = tuple(int(s) for s in out_shape)
        self._name = str(name)

    @property
    def name(self) -> str:
        return self._name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``y = F(x)``; ``x`` is ``(B, *in_shape)`` (differentiable)."""
        check_tensor(x, self.in_shape, "x", f"for {self.name}")
        return self._forward(x)

    def vjp(self, x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """``(dF/dx at x)^T v`` per sample (one forward and one backward pass)."""
        check_tensor(v, self.out_shape, "v", f"for {self.name}")
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            (g,) = torch.autograd.grad(self.forward(xg), xg, grad_outputs=v.to(x.dtype))
        return g.detach()

    def measure(
        self, x: torch.Tensor, sigma_y: float = 0.0, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """``y = F(x) + sigma_y n``, ``n ~ N(0, I)`` drawn from ``generator`` (on its device)."""
        check_sigma(sigma_y)
        with torch.no_grad():
            return add_gaussian_noise(self.forward(x), sigma_y, generator)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def extra_repr(self) -> str:
        return f"name={self.name!r}, in_shape={self.in_shape}, out_shape={self.out_shape}"


class PhaseRetrieval(NonlinearOperator):
    """Fourier magnitudes of the zero-padded image: ``y = |F_2D(pad(x))|`` per channel (orthonormal DFT).

    ``oversample`` >= 1: the padded size is ``round(oversample * H) x round(oversample * W)``, the
    image centred in it (DAPS: 2.0). ``out_shape = (C, round(oversample H), round(oversample W))``.
    """

    def __init__(self, in_shape: Shape, oversample: float = 2.0):
        if len(tuple(in_shape)) != 3:
            raise DiffinvError(f"phase retrieval needs an image shape (C, H, W), got {tuple(in_shape)}")
        oversample = float(oversample)
        if not math.isfinite(oversample) or oversample < 1.0:
            raise DiffinvError(f"oversample must be a finite number >= 1, got {oversample}")
        C, H, W = (int(s) for s in in_shape)
        Hp, Wp = round(oversample * H), round(oversample * W)
        super().__init__((C, H, W), (C, Hp, Wp), f"phase-retrieval (oversample {oversample:g})")
        self.oversample = oversample
        top, left = (Hp - H) // 2, (Wp - W) // 2
        self._pad = (left, Wp - W - left, top, Hp - H - top)  # F.pad order: last dim first

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        padded = nn.functional.pad(x, self._pad)
        return torch.fft.fft2(padded, norm="ortho").abs()
