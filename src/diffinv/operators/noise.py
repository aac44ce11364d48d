"""Measurement noise beyond ``sigma_y``: transmission-CT photon counts (Poisson) and weighted least squares.

Physics
-------
A CT operator returns line integrals ``A x`` in pixel units of an image ``x`` in ``[0, 1]``. The
physical line integral of the attenuation is ``p = kappa * A x`` with ``kappa = attenuation / N``
(``N`` the image side): ``attenuation`` is the attenuation, in e-folds, of a slab of value 1 one
image width thick. The default 4.0 is a water-like object ~20 cm across (``mu ~ 0.02 / mm``):
through the middle of a typical phantom ``exp(-p)`` is a few percent. :class:`PoissonNoise` draws

    ``counts ~ Poisson(I0 exp(-kappa A x))``    (``torch.poisson`` with the caller's generator)

and returns the measured sinogram in the operator's units, ``y = -log(max(counts, 1) / I0) / kappa``
(zero counts are clamped to one photon before the log), with the per-bin noise variance of that
``y`` to first order, ``var = 1 / (max(counts, 1) * kappa^2)`` (the delta method: ``Var(log c) ~ 1 / c``).

Solvers
-------
Methods in :data:`WEIGHTED_METHODS` (FISTA-TV, CG-Tikhonov, DDNM+, DDS, SCD) then solve a weighted
problem without any change to their code: :class:`WeightedOperator` is ``W^(1/2) A`` with weights
``w = (1 / var) / mean(1 / var)`` (mean 1, so a regularisation weight keeps its meaning) and the
data become ``W^(1/2) y``; ``0.5 ||W^(1/2) (A x - y)||^2`` is the weighted data term. The whitened
noise ``W^(1/2) n`` is white with the constant variance ``1 / mean(1 / var)``, which is what DDNM+'s
per-singular-value noise model (computed on the SVD of ``W^(1/2) A``, closed form for CT's
``pinv_method="gram"``) and DDS's damped data step assume. Every other method gets the scalar
``sigma_y = sqrt(mean(var))`` (the RMS noise std of y). DiffPIR could take the whitened problem
too but scored 0.09 dB lower with it (Poisson I0 1e4, 18 views, 8 real tuning slices:
benchmarks/results/solver_notes.md), so it keeps the RMS std.
"""

from __future__ import annotations

import math

import torch

from ..errors import DiffinvError
from .base import LinearOperator
from .ct_sparse import range_pinv, range_spectral_view

#: Solvers given the whitened problem (``W^(1/2) A``, ``W^(1/2) y``) when a per-bin variance is known.
WEIGHTED_METHODS = ("fista-tv", "cg-tikhonov", "ddnm+", "dds", "scd")
NOISE_MODELS = ("gaussian", "poisson")
MEASURED_KINDS = ("line-integrals", "counts")


class PoissonNoise:
    """Photon-count noise of transmission CT (see the module docstring).

    ``photons`` is the unattenuated count per detector bin ``I0`` (e.g. 1e4 low dose, 1e5
    standard); ``attenuation`` the e-folds of a unit slab one image width thick.
    """

    def __init__(self, photons: float = 1e4, attenuation: float = 4.0):
        self.photons, self.attenuation = float(photons), float(attenuation)
        if not (math.isfinite(self.photons) and self.photons >= 1):
            raise DiffinvError(f"photon count I0 must be a finite number >= 1, got {photons!r}")
        if not (math.isfinite(self.attenuation) and self.attenuation > 0):
            raise DiffinvError(f"attenuation must be a finite number > 0, got {attenuation!r}")

    def kappa(self, op: LinearOperator) -> float:
        """Physical line integral per operator unit: ``attenuation / N``."""
        return self.attenuation / int(op.in_shape[-1])

    def counts(self, op: LinearOperator, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """Draw ``Poisson(I0 exp(-kappa A x))`` on the generator's device (float64 rates)."""
        rate = self.photons * torch.exp(-self.kappa(op) * op.A(x).to(torch.float64))
        device = generator.device if generator is not None else rate.device
        return torch.poisson(rate.to(device), generator=generator).to(device=x.device, dtype=x.dtype)

    def from_counts(self, op: LinearOperator, counts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(y, var)``: line integrals in the operator's units and their per-bin noise variance."""
        if not bool(torch.isfinite(counts).all()) or bool((counts < 0).any()):
            raise DiffinvError("photon counts must be finite and >= 0")
        c = counts.clamp_min(1.0)
        k = self.kappa(op)
        return -torch.log(c / self.photons) / k, 1.0 / (c * k * k)

    def measure(
        self, op: LinearOperator, x: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(y, var)`` of a simulated scan of ``x``."""
        return self.from_counts(op, self.counts(op, x, generator))

    def __repr__(self) -> str:
        return f"PoissonNoise(photons={self.photons:g}, attenuation={self.attenuation:g})"


def effective_sigma(var: torch.Tensor) -> float:
    """The scalar noise std given to methods that assume white noise: ``sqrt(mean(var))``."""
    return float(var.double().mean().sqrt())


def whitening_weights(var: torch.Tensor) -> torch.Tensor:
    """``w = (1 / var) / mean(1 / var)`` per sample (mean 1)."""
    inv = 1.0 / var
    return inv / inv.flatten(1).mean(1).reshape(-1, *([1] * (var.dim() - 1)))


class WeightedOperator(LinearOperator):
    """``W^(1/2) A`` for one sample's weights ``w`` (shape ``(1, *out_shape)``), for weighted least squares.

    Keeps the inner operator's ``spec`` (so its family defaults apply); ``initial_estimate`` undoes
    the weights and calls the inner one (the FBP for CT). When the inner operator offers
    ``weighted_range_svd`` (CT with the closed-form pseudo-inverse), the pseudo-inverse, the damped
    pseudo-inverse and ``spectral_view`` use the range SVD of ``W^(1/2) A`` (computed on first use);
    otherwise CG (the base class).
    """

    def __init__(self, op: LinearOperator, weights: torch.Tensor):
        super().__init__(op.in_shape, op.out_shape)
        if tuple(weights.shape) != (1, *op.out_shape) or bool((weights <= 0).any()):
            raise DiffinvError(f"weights must be positive with shape (1, *{tuple(op.out_shape)})")
        self.inner = op
        self.sqrt_w = weights.sqrt()
        self._svd: tuple | None = None  # range SVD of W^(1/2) A (numpy float64), () when not available
        self._svd_cache: dict = {}  # the same as tensors, per (dtype, device)
        spec = getattr(op, "spec", None)
        if spec is not None:
            self.spec = spec

    def _w(self, like: torch.Tensor) -> torch.Tensor:
        return self.sqrt_w.to(device=like.device, dtype=like.dtype)

    def whiten(self, y: torch.Tensor) -> torch.Tensor:
        return y * self._w(y)

    def _A(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner._A(x) * self._w(x)

    def _At(self, y: torch.Tensor) -> torch.Tensor:
        return self.inner._At(y * self._w(y))

    def initial_estimate(self, y: torch.Tensor) -> torch.Tensor:
        return self.inner.initial_estimate(y / self._w(y))

    def _factors(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
        """``(U, s, V)`` of ``W^(1/2) A`` on its range in ``like``'s dtype/device, or None (then CG)."""
        if self._svd is None:
            svd_of = getattr(self.inner, "weighted_range_svd", None)
            self._svd = (svd_of(self.sqrt_w) if svd_of is not None else None) or ()
        if not self._svd:
            return None
        key = (like.dtype, like.device)  # converted once per dtype/device (every solver step asks)
        if key not in self._svd_cache:
            self._svd_cache[key] = tuple(
                torch.from_numpy(a).to(device=like.device, dtype=like.dtype) for a in self._svd
            )
        return self._svd_cache[key]

    def _pinv(self, y: torch.Tensor) -> torch.Tensor:
        f = self._factors(y)
        if f is None:
            return super()._pinv(y)
        return range_pinv(y, f, self.in_shape)  # A_w^+ y = V diag(1/s) U^T y

    def _damped_pinv(self, r: torch.Tensor, gamma: float) -> torch.Tensor:
        f = self._factors(r)
        if f is None:
            return super()._damped_pinv(r, gamma)
        return range_pinv(r, f, self.in_shape, gamma)  # A_w^T (A_w A_w^T + gamma I)^{-1} r

    def spectral_view(self, like: torch.Tensor):
        f = self._factors(like)
        if f is None:
            return None
        return range_spectral_view(f[1], f[2], self.in_shape)

    def window_rule(self):
        return self.inner.window_rule()
