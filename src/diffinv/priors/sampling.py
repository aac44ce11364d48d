"""Unconditional samplers for any :class:`~diffinv.priors.base.Prior`.

All samplers draw every random number from the explicit ``generator`` (on the generator's
device, then moved), so a seed gives the same images on any device. They work in the prior's
model space and return ``(n, C, H, W)`` images in [0, 1] (clamped unless ``clamp=False``).

Keyword options of every sampler (:data:`OPTIONS`): ``callback``, ``progress`` (a tqdm bar),
``clamp`` (to [0, 1]; default True), ``device`` (default the prior's), ``dtype`` (float32).
``callback`` is called after every step with a dict (:func:`~diffinv.priors.steps.report_step`):
``step`` (0-based), ``t``, ``x_t`` the current state (model space; VE state for
:func:`ve_pc_sample`) and ``x0`` the current Tweedie estimate in [0, 1] image space (not clamped).

References
----------
* DDPM: Ho, Jain & Abbeel (2020), "Denoising Diffusion Probabilistic Models", Alg. 2 / eq. 11.
* DDIM: Song, Meng & Ermon (2021), "Denoising Diffusion Implicit Models", eq. 12 and 16.
* PC: Song et al. (2021), "Score-Based Generative Modeling through SDEs", Alg. 2 (VE PC
  sampling), Alg. 4 (Langevin corrector step size from the signal-to-noise ratio ``snr``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch

from ..errors import DiffinvError
from .base import Prior
from .steps import (
    Callback,
    TimeGrid,
    ddim_step,
    ddpm_step,
    langevin_step,
    report_step,
    reverse_diffusion_step,
    x0_from_eps,
)

#: the keyword options every sampler takes, with their defaults (see the module docstring)
OPTIONS = {"callback": None, "progress": False, "clamp": True, "device": None, "dtype": torch.float32}


class _Run(NamedTuple):
    callback: Callback | None
    progress: bool
    clamp: bool
    device: torch.device
    randn: Callable[[], torch.Tensor]  # standard normal noise of the batch's shape


def _setup(prior: Prior, n: int, generator: torch.Generator | None, options: dict) -> _Run:
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise DiffinvError(f"unknown sampler option(s) {unknown}; accepted: {sorted(OPTIONS)}")
    o = {**OPTIONS, **options}
    if int(n) < 1:
        raise DiffinvError(f"n must be >= 1, got {n}")
    device = o["device"]
    if device is None:
        p = next(iter(prior.parameters()), None)
        b = next(iter(prior.buffers()), None)
        device = (
            (p if p is not None else b).device if (p is not None or b is not None) else torch.device("cpu")
        )
    device = torch.device(device)
    gen_device = generator.device if generator is not None else device
    shape, dtype = (int(n), *prior.image_shape), o["dtype"]

    def randn() -> torch.Tensor:
        return torch.randn(shape, generator=generator, dtype=dtype, device=gen_device).to(device)

    return _Run(o["callback"], bool(o["progress"]), bool(o["clamp"]), device, randn)


def _iter(seq, progress: bool, desc: str):
    if not progress:
        return seq
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover
        return seq
    return tqdm(seq, desc=desc)


def _finish(prior: Prior, x0: torch.Tensor, clamp: bool) -> torch.Tensor:
    img = prior.to_image(x0)
    return img.clamp(0, 1) if clamp else img


@torch.no_grad()
def ddpm_sample(
    prior: Prior,
    n: int,
    generator: torch.Generator | None = None,
    steps: int | None = None,
    **options,
) -> torch.Tensor:
    """Ancestral DDPM sampling (Ho et al. 2020, Alg. 2):

        x_{t-1} = 1/sqrt(alpha_t) (x_t - beta_t / sqrt(1 - abar_t) eps(x_t, t)) + sqrt(beta~_t) z,   (eq. 11)
        beta~_t = (1 - abar_{t-1}) / (1 - abar_t) beta_t                          (posterior variance, eq. 7)

    With ``steps < T`` the chain runs on the grid ``priors.steps.TimeGrid(prior.schedule, steps)``
    with the *respaced* betas ``beta_t = 1 - abar_t / abar_prev`` (Nichol & Dhariwal 2021, sec. 4),
    where ``prev`` is the next visited timestep (``abar_prev = 1`` after the last one): the step is
    ``priors.steps.ddpm_step``. No noise is added at the last step.
    """
    run = _setup(prior, n, generator, options)
    callback, randn = run.callback, run.randn
    grid = TimeGrid(prior.schedule, prior.schedule.T if steps is None else steps)
    x = randn()
    for s in _iter(grid, run.progress, "DDPM"):
        eps = prior.eps(x, s.t)
        if callback is not None:
            report_step(callback, s.i, s.t, x, prior.to_image(x0_from_eps(x, eps, s.ab_t)))
        x = ddpm_step(x, eps, s.ab_t, s.ab_prev, None if s.last else randn())
    return _finish(prior, x, run.clamp)


@torch.no_grad()
def ddim_sample(
    prior: Prior,
    n: int,
    generator: torch.Generator | None = None,
    steps: int = 50,
    eta: float = 0.0,
    **options,
) -> torch.Tensor:
    """DDIM sampling (Song et al. 2021, eq. 12) on ``priors.steps.TimeGrid(prior.schedule, steps)``:

        x0   = (x_t - sqrt(1 - ab_t) eps) / sqrt(ab_t)                      (the network's eps, x0 not clamped)
        x_prev = sqrt(ab_prev) x0 + sqrt(1 - ab_prev - sigma_t^2) eps + sigma_t z,
        sigma_t(eta) = eta sqrt((1 - ab_prev) / (1 - ab_t)) sqrt(1 - ab_t / ab_prev)        (eq. 16)

    with ``ab = abar`` and ``ab_prev = 1`` after the last step (so the output is the last x0;
    ``priors.steps.ddim_step``).
    ``eta = 0`` is the deterministic DDIM, ``eta = 1`` the DDPM posterior variance.
    """
    if eta < 0:
        raise DiffinvError(f"eta must be >= 0, got {eta}")
    run = _setup(prior, n, generator, options)
    callback, randn = run.callback, run.randn
    x = randn()
    x0 = x
    for s in _iter(TimeGrid(prior.schedule, steps), run.progress, "DDIM"):
        eps = prior.eps(x, s.t)
        x0 = x0_from_eps(x, eps, s.ab_t)
        report_step(callback, s.i, s.t, x, prior.to_image(x0))
        x = ddim_step(x0, eps, s.ab_t, s.ab_prev, eta, randn() if eta > 0 and not s.last else None)
    return _finish(prior, x0, run.clamp)


@torch.no_grad()
def ve_pc_sample(
    prior: Prior,
    n: int,
    generator: torch.Generator | None = None,
    steps: int | None = None,
    snr: float = 0.16,
    corrector_steps: int = 1,
    **options,
) -> torch.Tensor:
    """Predictor-corrector sampling of the VE SDE (Song et al. 2021, Alg. 2 with Alg. 4 corrector).

    Runs in the VE view of the prior (``x = x_0 + sigma n``, ``s = prior.score_ve``) on the noise
    levels ``sigma_i = prior.schedule.sigmas[t_i]`` at the indices ``t_i =
    prior.schedule.timesteps(steps)`` (all ``T`` levels when ``steps`` is None), descending.
    Start: ``x ~ N(0, sigma_max^2 I)``. At each level ``i``:

    * corrector, ``corrector_steps`` Langevin steps at ``sigma_i`` (Alg. 4)::

          g = s(x, sigma_i),  z ~ N(0, I),  eps = 2 (snr ||z|| / ||g||)^2,  x <- x + eps g + sqrt(2 eps) z

      (norms are per-sample L2 norms averaged over the batch, as in the reference code:
      ``priors.steps.langevin_step(..., norm="batch")``; the solvers use per-sample norms);
    * predictor, reverse diffusion to the next level (Alg. 2)::

          x <- x + (sigma_i^2 - sigma_{i+1}^2) s(x, sigma_i) + sqrt(sigma_i^2 - sigma_{i+1}^2) z

      (``priors.steps.reverse_diffusion_step``).

    After the corrector at the lowest level, the final denoise is the Tweedie estimate
    ``x0_ve(x, t_last)`` (instead of the last noisy predictor step).
    """
    if snr <= 0 or corrector_steps < 0:
        raise DiffinvError("snr must be > 0 and corrector_steps >= 0")
    run = _setup(prior, n, generator, options)
    callback, randn = run.callback, run.randn
    grid = TimeGrid(prior.schedule, prior.schedule.T if steps is None else steps)
    x = randn() * grid.sigmas[0]
    for s in _iter(grid, run.progress, "VE-PC"):
        for _ in range(int(corrector_steps)):
            x = langevin_step(x, prior.score_ve(x, s.t), snr, randn(), norm="batch")
        if not s.last:
            g = prior.score_ve(x, s.t)
            if callback is not None:
                report_step(callback, s.i, s.t, x, prior.to_image(x + s.sigma**2 * g))
            x, _ = reverse_diffusion_step(x, g, s.sigma, s.sigma_prev, randn())
        else:
            x0 = prior.x0_ve(x, s.t)
            if callback is not None:
                report_step(callback, s.i, s.t, x, prior.to_image(x0))
    return _finish(prior, x0, run.clamp)
