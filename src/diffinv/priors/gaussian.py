"""An exact Gaussian prior: the oracle that solvers are tested against.

If x_0 ~ N(m, C) and x_t = s x_0 + sqrt(1 - s^2) eps with s = sqrt(abar_t), then x_t is Gaussian
and the optimal denoiser is linear (Tweedie / Gaussian conditioning):

    E[x_0 | x_t] = m + C s (s^2 C + (1 - abar_t) I)^{-1} (x_t - s m)
                 = m + Q diag(s lam / (s^2 lam + 1 - abar_t)) Q^T (x_t - s m),   C = Q diag(lam) Q^T.

For a linear-Gaussian inverse problem y = A x + sigma_y n, the posterior is Gaussian with

    mean = m + C A^T (A C A^T + sigma_y^2 I)^+ (y - A m)
    cov  = C - C A^T (A C A^T + sigma_y^2 I)^+ A C.
"""

from __future__ import annotations

import math

import torch

from ..errors import DiffinvError
from ..operators.base import LinearOperator, dense_matrix
from .base import Prior
from .schedules import VPSchedule


class GaussianPrior(Prior):
    """Exact prior for data x_0 ~ N(mean, cov), in [0, 1] image units.

    Parameters
    ----------
    mean: tensor of shape (C, H, W) (its shape is the image shape).
    cov: full covariance (n, n) with n = C*H*W, or a vector (n,) / tensor shaped like ``mean``
        for the cheap diagonal form.
    schedule: VP schedule (default: DDPM linear, T = 1000).
    scale, shift: model space = (image - shift) / scale (default: model space = image space).

    Example
    -------
    >>> prior = GaussianPrior(torch.full((1, 4, 4), 0.5), torch.eye(16) * 0.01)
    >>> x0 = prior.x0(x_t, t=500)                         # exact E[x_0 | x_t]      # doctest: +SKIP
    >>> mean, cov = prior.posterior(op, y, sigma_y=0.05)  # exact posterior         # doctest: +SKIP
    """

    def __init__(
        self,
        mean: torch.Tensor,
        cov: torch.Tensor,
        schedule: VPSchedule | None = None,
        scale: float = 1.0,
        shift: float = 0.0,
    ):
        mean = torch.as_tensor(mean, dtype=torch.float64)
        if mean.dim() != 3:
            raise DiffinvError(f"mean must have shape (C, H, W), got {tuple(mean.shape)}")
        super().__init__(schedule or VPSchedule.linear(1000), tuple(mean.shape), scale=scale, shift=shift)
        n = mean.numel()
        cov = torch.as_tensor(cov, dtype=torch.float64)
        if not torch.isfinite(mean).all() or not torch.isfinite(cov).all():
            raise DiffinvError("mean and cov must be finite")
        if cov.numel() == n and (cov.dim() != 2 or n == 1):
            self.diagonal = True
            lam = cov.reshape(n)
            if (lam < 0).any():
                raise DiffinvError("diagonal covariance must be non-negative")
            Q = None
        elif cov.shape == (n, n):
            self.diagonal = False
            if not torch.allclose(cov, cov.T, atol=1e-10 * cov.abs().max().item()):
                raise DiffinvError("cov must be symmetric")
            lam, Q = torch.linalg.eigh(cov)
            if lam.min() < -1e-8 * lam.abs().max():
                raise DiffinvError("cov must be positive semi-definite")
            lam = lam.clamp_min(0)
        else:
            raise DiffinvError(f"cov must have shape ({n}, {n}) or ({n},), got {tuple(cov.shape)}")
        self.n = n
        self.register_buffer("mean", mean)
        self.register_buffer("lam", lam)  # eigenvalues of cov (image units)
        self.register_buffer("Q", Q if Q is not None else torch.empty(0))

    # ------------------------------------------------------------------ covariance helpers
    @property
    def cov(self) -> torch.Tensor:
        """The full (n, n) covariance, image units."""
        if self.diagonal:
            return torch.diag(self.lam)
        return (self.Q * self.lam) @ self.Q.T

    def _apply_spectral(self, v: torch.Tensor, gain: torch.Tensor) -> torch.Tensor:
        """Q diag(gain) Q^T v for v of shape (B, n); ``gain`` broadcastable to (B, n)."""
        if self.diagonal:
            return v * gain
        Q = self.Q.to(v)
        return ((v @ Q) * gain) @ Q.T

    # ------------------------------------------------------------------ exact denoiser
    def _x0(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        self.nfe += 1
        shape = x_t.shape
        work = torch.float64
        xt = x_t.reshape(shape[0], -1).to(work)
        ab = self.schedule.alpha_bar(t.cpu()).to(device=x_t.device, dtype=work).reshape(-1, 1)
        s = ab.sqrt()
        m = self.to_model(self.mean.to(device=x_t.device)).reshape(1, -1)
        lam = (self.lam.to(device=x_t.device) / self.scale**2).reshape(1, -1)
        gain = s * lam / (ab * lam + (1 - ab))
        x0 = m + self._apply_spectral(xt - s * m, gain)
        return x0.to(x_t.dtype).reshape(shape)

    # ------------------------------------------------------------------ sampling and posterior
    def sample(self, num: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``num`` exact samples from N(mean, cov) in image units, shape (num, C, H, W)."""
        z = torch.randn((num, self.n), generator=generator, dtype=torch.float64)
        x = self.mean.reshape(1, -1) + self._apply_spectral(z, self.lam.clamp_min(0).sqrt().reshape(1, -1))
        return x.reshape(num, *self.image_shape)

    def posterior(
        self, op: LinearOperator, y: torch.Tensor, sigma_y: float = 0.0
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Exact posterior mean (B, C, H, W) and covariance (n, n) of x given y = A x + sigma_y n.

        Everything in [0, 1] image units, computed in float64. For ``sigma_y = 0`` the
        Moore-Penrose inverse of A C A^T is used (the limit sigma_y -> 0).
        """
        if tuple(op.in_shape) != self.image_shape:
            raise DiffinvError(f"operator in_shape {op.in_shape} != prior image shape {self.image_shape}")
        if sigma_y < 0 or not math.isfinite(sigma_y):
            raise DiffinvError(f"sigma_y must be finite and >= 0, got {sigma_y}")
        A = dense_matrix(op)
        C = self.cov
        K = A @ C @ A.T + sigma_y**2 * torch.eye(A.shape[0], dtype=A.dtype)
        gain = C @ A.T @ torch.linalg.pinv(K, hermitian=True, rtol=1e-10)
        m = self.mean.reshape(-1)
        yv = y.reshape(y.shape[0], -1).to(torch.float64)
        mean = m + (yv - A @ m) @ gain.T
        cov = C - gain @ A @ C
        cov = 0.5 * (cov + cov.T)
        return mean.reshape(y.shape[0], *self.image_shape), cov

    def extra_repr(self) -> str:
        return f"n={self.n}, diagonal={self.diagonal}, " + super().extra_repr()
