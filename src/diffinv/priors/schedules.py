"""Noise schedules: variance-preserving (DDPM) discrete and variance-exploding (score-SDE).

VP (Ho et al. 2020):  x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps,  abar_t = prod_{s<=t} (1 - beta_s).
VE (Song et al. 2021): x_sigma = x_0 + sigma n, sigma geometric between sigma_min and sigma_max.

The two are the same family up to a rescaling of the state (Karras et al. 2022):

    sigma_t = sqrt((1 - abar_t) / abar_t),      x_ve = x_vp / sqrt(abar_t),
    abar = 1 / (1 + sigma^2).

Index convention: ``t = 0`` is the least noisy level, ``t = T - 1`` the noisiest, for both kinds.
"""

from __future__ import annotations

import math

import torch

from ..errors import DiffinvError
from .steps import MAX_VE_STEPS, SPACING, grid_times, ve_times

__all__ = ["MAX_VE_STEPS", "VESchedule", "VPSchedule"]


class VPSchedule:
    """Discrete variance-preserving schedule given by its betas (float64).

    Example
    -------
    >>> sched = VPSchedule.linear(1000)
    >>> sched.timesteps(100)[:3]                 # uniform skip, as DDIM/DDNM use
    tensor([990, 980, 970])
    """

    def __init__(self, betas: torch.Tensor):
        betas = torch.as_tensor(betas, dtype=torch.float64).flatten()
        if betas.numel() < 1 or not torch.isfinite(betas).all() or (betas <= 0).any() or (betas >= 1).any():
            raise DiffinvError("betas must be a non-empty 1-D sequence of values in (0, 1)")
        self.betas = betas
        self.alphas = 1.0 - betas
        self.alphas_cumprod = torch.cumprod(self.alphas, 0)

    # ------------------------------------------------------------------ constructors
    @classmethod
    def linear(cls, T: int = 1000, beta_start: float = 1e-4, beta_end: float = 2e-2) -> VPSchedule:
        """DDPM's linear betas (Ho et al. 2020), as used by ADM / DDNM / DDRM / DPS checkpoints."""
        return cls(torch.linspace(beta_start, beta_end, int(T), dtype=torch.float64))

    @classmethod
    def cosine(cls, T: int = 1000, s: float = 0.008, max_beta: float = 0.999) -> VPSchedule:
        """Nichol & Dhariwal (2021) cosine schedule: abar(t) = cos^2(((t/T + s)/(1 + s)) pi/2)."""
        t = torch.arange(int(T) + 1, dtype=torch.float64) / int(T)
        f = torch.cos((t + s) / (1 + s) * math.pi / 2) ** 2
        betas = (1 - f[1:] / f[:-1]).clamp(max=max_beta)
        return cls(betas)

    @classmethod
    def from_alphas_cumprod(cls, alphas_cumprod: torch.Tensor) -> VPSchedule:
        ab = torch.as_tensor(alphas_cumprod, dtype=torch.float64).flatten()
        prev = torch.cat([ab.new_ones(1), ab[:-1]])
        return cls(1 - ab / prev)

    @classmethod
    def from_sigmas(cls, sigmas: torch.Tensor) -> VPSchedule:
        """The VP schedule whose VE-equivalent noise levels are ``sigmas`` (ascending)."""
        sigmas = torch.as_tensor(sigmas, dtype=torch.float64).flatten()
        if (sigmas[1:] <= sigmas[:-1]).any():
            raise DiffinvError("sigmas must be strictly increasing (index 0 = least noise)")
        return cls.from_alphas_cumprod(1.0 / (1.0 + sigmas**2))

    # ------------------------------------------------------------------ queries
    @property
    def T(self) -> int:
        return self.betas.numel()

    @property
    def sigmas(self) -> torch.Tensor:
        """VE-equivalent noise levels sigma_t = sqrt((1 - abar_t) / abar_t)."""
        ab = self.alphas_cumprod
        return ((1 - ab) / ab).sqrt()

    def alpha_bar(self, t: torch.Tensor | int | float) -> torch.Tensor:
        """abar_t (float64); ``t = -1`` means the clean end (abar = 1), as DDIM's last step needs.

        A floating ``t`` that is not a whole number, in [0, T - 1], lies between two training
        levels: its noise level is interpolated linearly in log sigma (:meth:`sigma_at`) and
        abar = 1 / (1 + sigma^2). Whole numbers give the table's values exactly.
        """
        t = torch.as_tensor(t)
        if t.is_floating_point() and bool((t != t.round()).any()):
            return 1.0 / (1.0 + self.sigma_at(t) ** 2)
        t = t.to(torch.long)
        ab = torch.cat([self.alphas_cumprod.new_ones(1), self.alphas_cumprod])
        return ab[t + 1]

    def sigma_at(self, t: torch.Tensor | float) -> torch.Tensor:
        """VE noise level at a continuous time t in [0, T - 1]: log sigma interpolated linearly
        between the neighbouring training levels (as k-diffusion reads discrete DDPM models on a
        continuous noise range); equal to ``sigmas[t]`` at whole t."""
        t = torch.as_tensor(t, dtype=torch.float64)
        if bool(((t < 0) | (t > self.T - 1)).any()):
            raise DiffinvError(f"t must be in [0, {self.T - 1}], got {t.min().item()}..{t.max().item()}")
        log_s = self.sigmas.log()
        lo = t.floor().long().clamp(max=self.T - 1)
        hi = (lo + 1).clamp(max=self.T - 1)
        w = t - lo.to(torch.float64)
        return (log_s[lo] * (1 - w) + log_s[hi] * w).exp()

    def ve_timesteps(self, num_steps: int, spacing: str = SPACING) -> torch.Tensor:
        """Descending times for a VE (predictor-corrector) sampler with ``num_steps`` noise levels:
        :func:`diffinv.priors.steps.ve_times` (training levels up to T, continuous times beyond)."""
        return ve_times(self.T, num_steps, spacing)

    def timesteps(self, num_steps: int, spacing: str = SPACING) -> torch.Tensor:
        """``num_steps`` descending timesteps: :func:`diffinv.priors.steps.grid_times` (uniform skip
        T - skip, ..., skip, 0 when ``num_steps`` divides T, else the rounded linspace over [0, T-1])."""
        return grid_times(self.T, num_steps, spacing)

    def __repr__(self) -> str:
        return f"VPSchedule(T={self.T}, beta=[{self.betas[0]:.2e}, {self.betas[-1]:.2e}])"


class VESchedule:
    """Variance-exploding schedule: sigma(u) = sigma_min (sigma_max / sigma_min)^u, u in [0, 1].

    Discretised at ``N`` levels, ascending (index 0 = sigma_min), as score-SDE's NCSN++ models are
    sampled. :meth:`to_vp` gives the equivalent VP schedule, so that VP samplers (DDIM, DDNM)
    run on VE models and the other way round.
    """

    def __init__(self, sigma_min: float = 0.01, sigma_max: float = 50.0, N: int = 1000):
        if not (0 < sigma_min < sigma_max) or int(N) < 2:
            raise DiffinvError(
                f"need 0 < sigma_min < sigma_max and N >= 2, got {sigma_min}, {sigma_max}, {N}"
            )
        self.sigma_min, self.sigma_max, self.N = float(sigma_min), float(sigma_max), int(N)

    def sigma(self, u: torch.Tensor | float) -> torch.Tensor:
        u = torch.as_tensor(u, dtype=torch.float64)
        return self.sigma_min * (self.sigma_max / self.sigma_min) ** u

    @property
    def sigmas(self) -> torch.Tensor:
        return self.sigma(torch.linspace(0, 1, self.N, dtype=torch.float64))

    def to_vp(self) -> VPSchedule:
        return VPSchedule.from_sigmas(self.sigmas)

    def __repr__(self) -> str:
        return f"VESchedule(sigma_min={self.sigma_min}, sigma_max={self.sigma_max}, N={self.N})"
