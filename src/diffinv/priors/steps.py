"""The step layer: one time grid and the reverse-diffusion steps that every sampler and solver uses.

A diffusion sampler is a loop over a :class:`TimeGrid` (built once from the prior's schedule and a
step count) that calls the prior for x0 / eps / the score and one of the steps below. The solvers
(:mod:`diffinv.solvers`) and the unconditional samplers (:mod:`diffinv.priors.sampling`) all use
these functions, so each equation is written once.

Notation (model space, batched tensors ``(B, ...)``):

* VP: ``x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps``; ``ab_t`` = abar at the current level,
  ``ab_prev`` = abar at the level the step goes to (the next one visited, less noisy; the paper
  index t - 1). After the last step ``ab_prev = 1`` (the clean end).
* VE: ``x = x_0 + sigma n``, ``sigma_t = sqrt((1 - abar_t) / abar_t)``, ``x_ve = x_vp / sqrt(abar_t)``;
  ``sigma`` / ``sigma_prev`` as above (``sigma_prev = 0`` after the last step).
* ``x0``: the Tweedie estimate E[x_0 | x_t]; ``eps``: the noise estimate; ``z ~ N(0, I)``.

Contents: :class:`TimeGrid` / :func:`grid_times` (the grid rule); the VP steps :func:`ddim_step`
(with :func:`ddim_coefficients`; ``eta = 1`` is the DDPM posterior), :func:`ddpm_step` and
:func:`forward_jump`; the VE steps :func:`reverse_diffusion_step`, :func:`ancestral_step` and
:func:`langevin_step`; per-sample helpers :func:`bview`, :func:`bnorm`, :func:`safe_div`.

References
----------
* DDPM: Ho, Jain & Abbeel (2020), Alg. 2 / eq. 11; respaced betas: Nichol & Dhariwal (2021), sec. 4.
* DDIM: Song, Meng & Ermon (2021), eq. 12 and 16.
* Score-SDE: Song et al. (2021), Alg. 2-5 (VE predictor-corrector, Langevin step size from
  ``snr``), Appendix F (SMLD ancestral sampling).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, NamedTuple

import torch

from ..errors import DiffinvError

if TYPE_CHECKING:  # (schedules imports this module: no import at run time)
    from .schedules import VPSchedule

#: Upper bound on the steps of a VE (predictor-corrector) sampler: its grid is continuous, so the
#: training steps do not bound it; this only catches absurd values (100x the MCG paper's 2000).
MAX_VE_STEPS = 100_000

#: the spacing rules of :func:`grid_times`
SPACINGS = ("skip-or-linspace", "skip")
#: the rule every grid of the library uses (see :func:`grid_times`)
SPACING = "skip-or-linspace"


#: A progress callback: called once per step with a dict of named values (:func:`report_step`).
Callback = Callable[[dict], None]


def report_step(callback: Callback | None, step: int, t, x_t: torch.Tensor, x0: torch.Tensor) -> None:
    """Call ``callback`` (if any) with ``{"step", "t", "x_t", "x0"}``: the 0-based step index, the
    time (a grid time, a VE level, or None for iterative methods), the state in model space, and the
    current estimate of the clean image in [0, 1] image units (not clamped).

    >>> seen = []
    >>> report_step(seen.append, 3, 250, torch.zeros(1), torch.ones(1))
    >>> sorted(seen[0]), seen[0]["step"], seen[0]["t"]
    (['step', 't', 'x0', 'x_t'], 3, 250)
    """
    if callback is not None:
        callback({"step": int(step), "t": t, "x_t": x_t, "x0": x0})


# ---------------------------------------------------------------------- per-sample helpers
def bview(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A per-sample vector ``(B,)`` reshaped to broadcast against ``like`` ``(B, ...)``."""
    return v.reshape(-1, *([1] * (like.dim() - 1)))


def bnorm(v: torch.Tensor) -> torch.Tensor:
    """Per-sample Euclidean norm, shape ``(B,)``."""
    return v.reshape(v.shape[0], -1).norm(dim=1)


def safe_div(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    """``num / den`` per sample (den of shape (B,)), 0 where den == 0."""
    den = bview(den, num)
    ok = den > 0
    return torch.where(ok, num / torch.where(ok, den, torch.ones_like(den)), torch.zeros_like(num))


# ---------------------------------------------------------------------- the time grid
def grid_times(T: int, steps: int, spacing: str = SPACING) -> torch.Tensor:
    """``steps`` descending training times in [0, T - 1] (long tensor), ending at 0.

    ``spacing="skip-or-linspace"`` (:data:`SPACING`, the rule of every grid so far): when ``steps``
    divides T, the uniform skip ``t_i = i T / steps`` (T - T/steps, ..., T/steps, 0), which is the
    grid of the DDIM and DDNM code; otherwise ``round(linspace(0, T - 1, steps))``, which starts at
    T - 1 (as ADM's ``space_timesteps`` respacing does). So the first time jumps between step counts:
    990 for 100 steps, 999 for 99 or 101.

    ``spacing="skip"``: ``t_i = i (T // steps)`` for every step count (the DDNM code: ``skip = T // S``,
    exactly S steps); 3 steps are 666, 333, 0 (``"skip-or-linspace"``: 999, 500, 0). For step
    counts that divide T the two rules agree.
    """
    T, steps = int(T), int(steps)
    if not 1 <= steps <= T:
        raise DiffinvError(f"num_steps must be in [1, {T}], got {steps}")
    if spacing not in SPACINGS:
        raise DiffinvError(f"spacing must be one of {SPACINGS}, got {spacing!r}")
    if spacing == "skip" or T % steps == 0:
        ts = torch.arange(steps) * (T // steps)
    else:
        ts = torch.linspace(0, T - 1, steps, dtype=torch.float64).round().long()
    return ts.flip(0)


def ve_times(T: int, steps: int, spacing: str = SPACING) -> torch.Tensor:
    """Descending times of a VE (predictor-corrector) sampler with ``steps`` noise levels.

    Up to T levels: :func:`grid_times` (training levels). Beyond T, a VE sampler discretises the
    continuous noise range: ``steps`` equally spaced times from T - 1 down to 0 (float64; non-whole
    times lie between training levels, see ``VPSchedule.alpha_bar``), at most :data:`MAX_VE_STEPS`.
    """
    steps = int(steps)
    if not 1 <= steps <= MAX_VE_STEPS:
        raise DiffinvError(f"steps must be in [1, {MAX_VE_STEPS}] for a VE sampler, got {steps}")
    if steps <= int(T):
        return grid_times(T, steps, spacing)
    return torch.linspace(int(T) - 1, 0, steps, dtype=torch.float64)


class GridStep(NamedTuple):
    """One step of a :class:`TimeGrid`: from the level ``t`` to the next one visited."""

    i: int  #: position on the grid (0 = the noisiest level)
    t: int | float  #: the network's time (an int at training levels)
    ab_t: float  #: abar at t
    ab_prev: float  #: abar at the level the step goes to (1.0 after the last step)
    sigma: float  #: VE noise level at t
    sigma_prev: float  #: VE noise level the step goes to (0.0 after the last step)
    last: bool  #: the last step (it goes to the clean end)


class TimeGrid:
    """The descending levels of one sampler run, built once from a schedule and a step count.

    ``times[i]`` are the network times (:func:`grid_times`; ``continuous=True``: :func:`ve_times`, for
    VE samplers, which may take more steps than the schedule's T). ``alpha_bars`` and ``sigmas`` have
    one more entry than ``times``: the clean end (abar = 1, sigma = 0). Iterating gives a
    :class:`GridStep` per step; ``grid[i]`` the i-th.

    Example
    -------
    >>> from diffinv.priors.schedules import VPSchedule
    >>> grid = TimeGrid(VPSchedule.linear(1000), 4)
    >>> grid.times, grid[3].ab_prev
    ([750, 500, 250, 0], 1.0)
    """

    def __init__(self, schedule: VPSchedule, steps: int, *, continuous: bool = False, spacing: str = SPACING):
        T = schedule.T
        ts = ve_times(T, steps, spacing) if continuous else grid_times(T, steps, spacing)
        self.times: list[int | float] = [int(t) if float(t).is_integer() else float(t) for t in ts.tolist()]
        ab = schedule.alphas_cumprod
        sig = schedule.sigmas
        self.alpha_bars: list[float] = [
            float(ab[t]) if isinstance(t, int) else float(schedule.alpha_bar(t)) for t in self.times
        ] + [1.0]
        self.sigmas: list[float] = [
            float(sig[t]) if isinstance(t, int) else float(schedule.sigma_at(t)) for t in self.times
        ] + [0.0]

    def __len__(self) -> int:
        return len(self.times)

    def __getitem__(self, i: int) -> GridStep:
        n = len(self.times)
        if not 0 <= i < n:
            raise IndexError(f"step {i} of a {n}-step grid")
        ab, sig = self.alpha_bars, self.sigmas
        return GridStep(i, self.times[i], ab[i], ab[i + 1], sig[i], sig[i + 1], i + 1 == n)

    def __iter__(self):
        return (self[i] for i in range(len(self.times)))

    def __repr__(self) -> str:
        return f"TimeGrid({len(self)} steps, t = {self.times[0]} .. {self.times[-1]})"


# ---------------------------------------------------------------------- VP steps
def x0_from_eps(x_t: torch.Tensor, eps: torch.Tensor, ab_t: float) -> torch.Tensor:
    """Tweedie's estimate from the noise estimate: x0 = (x_t - sqrt(1 - ab_t) eps) / sqrt(ab_t)."""
    return (x_t - math.sqrt(1.0 - ab_t) * eps) / math.sqrt(ab_t)


def eps_from_x0(x_t: torch.Tensor, x0: torch.Tensor, ab_t: float) -> torch.Tensor:
    """The noise estimate implied by x0: eps = (x_t - sqrt(ab_t) x0) / sqrt(1 - ab_t)."""
    return (x_t - math.sqrt(ab_t) * x0) / math.sqrt(1.0 - ab_t)


#: the noise parametrisations of :func:`ddim_coefficients`
VARIANCES = ("ddim", "ddnm")


def ddim_coefficients(ab_t: float, ab_prev: float, eta: float, variance: str = "ddim") -> tuple[float, float]:
    """``(sigma, c_eps)`` of the update ``x_prev = sqrt(ab_prev) x0 + c_eps eps + sigma z``.

    ``variance="ddim"`` (Song et al. 2021, eq. 16; eta = 1 gives the DDPM posterior variance)::

        sigma = eta sqrt((1 - ab_prev) / (1 - ab_t)) sqrt(1 - ab_t / ab_prev),  c_eps = sqrt(1 - ab_prev - sigma^2)

    ``variance="ddnm"`` (the update of the DDNM authors' code, a share eta of the noise fresh)::

        sigma = eta sqrt(1 - ab_prev),  c_eps = sqrt(1 - ab_prev) sqrt(1 - eta^2)

    Both give ``sigma^2 + c_eps^2 = 1 - ab_prev``, and sigma = 0 at the last step (ab_prev = 1).
    """
    if variance == "ddnm":
        return eta * math.sqrt(1.0 - ab_prev), math.sqrt(1.0 - ab_prev) * math.sqrt(max(1.0 - eta**2, 0.0))
    if variance != "ddim":
        raise DiffinvError(f"variance must be one of {VARIANCES}, got {variance!r}")
    sigma = eta * math.sqrt(max((1.0 - ab_t / ab_prev) * (1.0 - ab_prev) / (1.0 - ab_t), 0.0))
    return sigma, math.sqrt(max(1.0 - ab_prev - sigma**2, 0.0))


def ddim_step(
    x0: torch.Tensor,
    eps: torch.Tensor,
    ab_t: float,
    ab_prev: float,
    eta: float,
    noise: torch.Tensor | None = None,
    variance: str = "ddim",
) -> torch.Tensor:
    """The DDIM update (Song et al. 2021, eq. 12) with the coefficients of :func:`ddim_coefficients`::

        x_prev = sqrt(ab_prev) x0 + c_eps eps + sigma z

    ``noise`` is z (None: no noise term, as at the last step or for eta = 0). With ``eta = 1`` and
    ``eps`` consistent with x0 (:func:`eps_from_x0`) this is a draw of the DDPM posterior
    q(x_prev | x_t, x0) for any (skipped) pair of levels.
    """
    sigma, c_eps = ddim_coefficients(ab_t, ab_prev, eta, variance)
    x = math.sqrt(ab_prev) * x0 + c_eps * eps
    return x if noise is None else x + sigma * noise


def ddim_step_from_x0(
    x_t: torch.Tensor,
    x0: torch.Tensor,
    ab_t: float,
    ab_prev: float,
    eta: float,
    noise: torch.Tensor | None = None,
) -> torch.Tensor:
    """:func:`ddim_step` with the eps consistent with x0 and x_t (:func:`eps_from_x0`), the form the
    solvers use on a (clamped, projected or guided) x0; with ``eta = 1`` a draw of the DDPM
    posterior q(x_prev | x_t, x0)."""
    return ddim_step(x0, eps_from_x0(x_t, x0, ab_t), ab_t, ab_prev, eta, noise)


def ddpm_step(
    x_t: torch.Tensor, eps: torch.Tensor, ab_t: float, ab_prev: float, noise: torch.Tensor | None = None
) -> torch.Tensor:
    """Ancestral DDPM step (Ho et al. 2020, eq. 11) with the respaced beta of a skipped grid::

        beta   = 1 - ab_t / ab_prev                            (Nichol & Dhariwal 2021, sec. 4)
        x_prev = (x_t - beta / sqrt(1 - ab_t) eps) / sqrt(1 - beta) + sqrt(beta~) z,
        beta~  = (1 - ab_prev) / (1 - ab_t) beta               (posterior variance, eq. 7)

    ``noise`` is z (None: the mean only, as at the last step).
    """
    beta = 1.0 - ab_t / ab_prev
    mean = (x_t - beta / math.sqrt(1.0 - ab_t) * eps) / math.sqrt(1.0 - beta)
    if noise is None:
        return mean
    return mean + math.sqrt((1.0 - ab_prev) / (1.0 - ab_t) * beta) * noise


def forward_jump(x: torch.Tensor, ab_t: float, ab_back: float, noise: torch.Tensor) -> torch.Tensor:
    """The forward process from level t back to a noisier level (ab_back < ab_t)::

        q(x_back | x_t) = N(sqrt(ab_back / ab_t) x_t, (1 - ab_back / ab_t) I)

    (DDNM's time travel, RePaint's resampling jumps).
    """
    ratio = ab_back / ab_t
    return math.sqrt(ratio) * x + math.sqrt(1.0 - ratio) * noise


# ---------------------------------------------------------------------- VE steps
def reverse_diffusion_step(
    x: torch.Tensor, score: torch.Tensor, sigma: float, sigma_prev: float, noise: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Reverse-diffusion predictor for the VE SDE (score-SDE, eq. 47 / Algorithm 2)::

        x_mean = x + (sigma_i^2 - sigma_{i-1}^2) s(x, sigma_i),
        x      = x_mean + sqrt(sigma_i^2 - sigma_{i-1}^2) z.

    Returns ``(x, x_mean)``.
    """
    g2 = sigma**2 - sigma_prev**2
    x_mean = x + g2 * score
    return x_mean + math.sqrt(max(g2, 0.0)) * noise, x_mean


def ancestral_step(
    x: torch.Tensor, score: torch.Tensor, sigma: float, sigma_prev: float, noise: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Ancestral sampling predictor for the VE (SMLD) chain (score-SDE, Appendix F); returns (x, x_mean)::

        x_mean = x + (sigma_i^2 - sigma_{i-1}^2) s(x, sigma_i),
        x      = x_mean + sqrt(sigma_{i-1}^2 (sigma_i^2 - sigma_{i-1}^2) / sigma_i^2) z.

    The same mean as :func:`reverse_diffusion_step`, but the noise of the Gaussian posterior
    q(x_{i-1} | x_i, x_0) -- at most sigma_{i-1} -- instead of the Euler-Maruyama step's
    sqrt(sigma_i^2 - sigma_{i-1}^2), which is about sigma_i on a coarse grid. It therefore stays on the
    noise levels with tens of steps, where reverse diffusion needs hundreds.
    """
    g2 = max(sigma**2 - sigma_prev**2, 0.0)
    x_mean = x + g2 * score
    std = math.sqrt(sigma_prev**2 * g2 / sigma**2) if sigma > 0 else 0.0
    return x_mean + std * noise, x_mean


#: VE predictors by name (``predictor`` parameter of the VE samplers).
VE_PREDICTORS = {"reverse-diffusion": reverse_diffusion_step, "ancestral": ancestral_step}


def check_predictor(name) -> None:
    """ValueError unless ``name`` is a key of :data:`VE_PREDICTORS`."""
    if name not in VE_PREDICTORS:
        raise DiffinvError(f"predictor must be one of {tuple(VE_PREDICTORS)}, got {name!r}")


#: the norms of :func:`langevin_step`
LANGEVIN_NORMS = ("sample", "batch")


def langevin_step(
    x: torch.Tensor, score: torch.Tensor, snr: float, noise: torch.Tensor, norm: str = "sample"
) -> torch.Tensor:
    """Langevin corrector (score-SDE Algorithms 4-5 with alpha_i = 1, as for the VE SDE)::

        e = 2 (snr ||z|| / ||s(x)||)^2,   x <- x + e s(x) + sqrt(2 e) z

    ``norm="sample"``: ||.|| per sample, so that a batch behaves like independent runs (step 0 where
    the score vanishes); the solvers use it. ``norm="batch"``: the per-sample norms averaged over the
    batch, one step size for all (score-SDE's reference code, and :func:`~diffinv.priors.sampling.ve_pc_sample`).
    """
    if norm == "batch":
        B = x.shape[0]
        g_norm = score.reshape(B, -1).norm(dim=1).mean()
        z_norm = noise.reshape(B, -1).norm(dim=1).mean()
        step = 2.0 * (snr * z_norm / g_norm.clamp_min(torch.finfo(x.dtype).tiny)) ** 2
        return x + step * score + (2.0 * step).sqrt() * noise
    if norm != "sample":
        raise DiffinvError(f"norm must be one of {LANGEVIN_NORMS}, got {norm!r}")
    step = bview(2.0 * (snr * safe_div(bnorm(noise), bnorm(score))) ** 2, x)  # (B, 1, ...)
    return x + step * score + (2.0 * step).sqrt() * noise
