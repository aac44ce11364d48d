"""Unconditional samplers for any :class:`~diffinv.priors.base.Prior`.

All samplers draw every random number from the explicit ``generator`` (on the generator's
device, then moved), so a seed gives the same images on any device. They work in the prior's
model space and return ``(n, C, H, W)`` images in [0, 1] (clamped unless ``clamp=False``).

``callback(step, x_t, x0)`` is called after every step with the step index (0-based), the
current state (model space; VE state for :func:`ve_pc_sample`) and the current Tweedie
estimate in [0, 1] image space (not clamped).

References
----------
* DDPM: Ho, Jain & Abbeel (2020), "Denoising Diffusion Probabilistic Models", Alg. 2 / eq. 11.
* DDIM: Song, Meng & Ermon (2021), "Denoising Diffusion Implicit Models", eq. 12 and 16.
* PC: Song et al. (2021), "Score-Based Generative Modeling through SDEs", Alg. 2 (VE PC
  sampling), Alg. 4 (Langevin corrector step size from the signal-to-noise ratio ``snr``).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .base import Prior

Callback = Callable[[int, torch.Tensor, torch.Tensor], None]


def _setup(prior: Prior, n: int, generator: torch.Generator | None, device, dtype):
    if int(n) < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if device is None:
        p = next(iter(prior.parameters()), None)
        b = next(iter(prior.buffers()), None)
        device = (
            (p if p is not None else b).device if (p is not None or b is not None) else torch.device("cpu")
        )
    device = torch.device(device)
    gen_device = generator.device if generator is not None else device
    shape = (int(n), *prior.image_shape)

    def randn() -> torch.Tensor:
        return torch.randn(shape, generator=generator, dtype=dtype, device=gen_device).to(device)

    return device, randn


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


def _abar(prior: Prior, t: int) -> float:
    return float(prior.schedule.alpha_bar(int(t)))


@torch.no_grad()
def ddpm_sample(
    prior: Prior,
    n: int,
    generator: torch.Generator | None = None,
    steps: int | None = None,
    *,
    callback: Callback | None = None,
    progress: bool = False,
    clamp: bool = True,
    device=None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Ancestral DDPM sampling (Ho et al. 2020, Alg. 2):

        x_{t-1} = 1/sqrt(alpha_t) (x_t - beta_t / sqrt(1 - abar_t) eps(x_t, t)) + sqrt(beta~_t) z,   (eq. 11)
        beta~_t = (1 - abar_{t-1}) / (1 - abar_t) beta_t                          (posterior variance, eq. 7)

    With ``steps < T`` the chain runs on the uniformly skipped timesteps
    ``prior.schedule.timesteps(steps)`` with the *respaced* betas
    ``beta_t = 1 - abar_t / abar_prev`` (Nichol & Dhariwal 2021, sec. 4), where ``prev`` is the next
    visited timestep (``abar_prev = 1`` after the last one). No noise is added at the last step.
    """
    device, randn = _setup(prior, n, generator, device, dtype)
    T = prior.schedule.T
    ts = torch.arange(T - 1, -1, -1) if steps is None else prior.schedule.timesteps(steps)
    ts = [int(t) for t in ts]
    x = randn()
    for i in _iter(range(len(ts)), progress, "DDPM"):
        t = ts[i]
        a_t = _abar(prior, t)
        a_prev = _abar(prior, ts[i + 1]) if i + 1 < len(ts) else 1.0
        beta = 1.0 - a_t / a_prev
        eps = prior.eps(x, t)
        mean = (x - beta / (1.0 - a_t) ** 0.5 * eps) / (1.0 - beta) ** 0.5
        if callback is not None:
            x0 = (x - (1.0 - a_t) ** 0.5 * eps) / a_t**0.5
            callback(i, x, prior.to_image(x0))
        if i + 1 < len(ts):
            var = (1.0 - a_prev) / (1.0 - a_t) * beta
            x = mean + var**0.5 * randn()
        else:
            x = mean
    return _finish(prior, x, clamp)


@torch.no_grad()
def ddim_sample(
    prior: Prior,
    n: int,
    generator: torch.Generator | None = None,
    steps: int = 50,
    eta: float = 0.0,
    *,
    callback: Callback | None = None,
    progress: bool = False,
    clamp: bool = True,
    device=None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """DDIM sampling (Song et al. 2021, eq. 12) on ``prior.schedule.timesteps(steps)``:

        x0   = (x_t - sqrt(1 - a_t) eps) / sqrt(a_t)
        x_prev = sqrt(a_prev) x0 + sqrt(1 - a_prev - sigma_t^2) eps + sigma_t z,
        sigma_t(eta) = eta sqrt((1 - a_prev) / (1 - a_t)) sqrt(1 - a_t / a_prev)        (eq. 16)

    with ``a = abar`` and ``a_prev = 1`` after the last step (so the output is the last x0).
    ``eta = 0`` is the deterministic DDIM, ``eta = 1`` the DDPM posterior variance.
    """
    if eta < 0:
        raise ValueError(f"eta must be >= 0, got {eta}")
    device, randn = _setup(prior, n, generator, device, dtype)
    ts = [int(t) for t in prior.schedule.timesteps(steps)]
    x = randn()
    x0 = x
    for i in _iter(range(len(ts)), progress, "DDIM"):
        t = ts[i]
        a_t = _abar(prior, t)
        a_prev = _abar(prior, ts[i + 1]) if i + 1 < len(ts) else 1.0
        eps = prior.eps(x, t)
        x0 = (x - (1.0 - a_t) ** 0.5 * eps) / a_t**0.5
        if callback is not None:
            callback(i, x, prior.to_image(x0))
        sigma = eta * ((1.0 - a_prev) / (1.0 - a_t) * (1.0 - a_t / a_prev)) ** 0.5
        dir_coef = max(1.0 - a_prev - sigma**2, 0.0) ** 0.5
        x = a_prev**0.5 * x0 + dir_coef * eps
        if sigma > 0 and i + 1 < len(ts):
            x = x + sigma * randn()
    return _finish(prior, x0, clamp)


@torch.no_grad()
def ve_pc_sample(
    prior: Prior,
    n: int,
    generator: torch.Generator | None = None,
    steps: int | None = None,
    snr: float = 0.16,
    corrector_steps: int = 1,
    *,
    callback: Callback | None = None,
    progress: bool = False,
    clamp: bool = True,
    device=None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Predictor-corrector sampling of the VE SDE (Song et al. 2021, Alg. 2 with Alg. 4 corrector).

    Runs in the VE view of the prior (``x = x_0 + sigma n``, ``s = prior.score_ve``) on the noise
    levels ``sigma_i = prior.schedule.sigmas[t_i]`` at the indices ``t_i =
    prior.schedule.timesteps(steps)`` (all ``T`` levels when ``steps`` is None), descending.
    Start: ``x ~ N(0, sigma_max^2 I)``. At each level ``i``:

    * corrector, ``corrector_steps`` Langevin steps at ``sigma_i`` (Alg. 4)::

          g = s(x, sigma_i),  z ~ N(0, I),  eps = 2 (snr ||z|| / ||g||)^2,  x <- x + eps g + sqrt(2 eps) z

      (norms are per-sample L2 norms averaged over the batch, as in the reference code);
    * predictor, reverse diffusion to the next level (Alg. 2)::

          x <- x + (sigma_i^2 - sigma_{i+1}^2) s(x, sigma_i) + sqrt(sigma_i^2 - sigma_{i+1}^2) z.

    After the corrector at the lowest level, the final denoise is the Tweedie estimate
    ``x0_ve(x, t_last)`` (instead of the last noisy predictor step).
    """
    if snr <= 0 or corrector_steps < 0:
        raise ValueError("snr must be > 0 and corrector_steps >= 0")
    device, randn = _setup(prior, n, generator, device, dtype)
    T = prior.schedule.T
    ts = list(range(T - 1, -1, -1)) if steps is None else [int(t) for t in prior.schedule.timesteps(steps)]
    sig = prior.schedule.sigmas
    x = randn() * float(sig[ts[0]])
    B = x.shape[0]
    for i in _iter(range(len(ts)), progress, "VE-PC"):
        t = ts[i]
        s_i = float(sig[t])
        for _ in range(int(corrector_steps)):
            g = prior.score_ve(x, t)
            z = randn()
            g_norm = g.reshape(B, -1).norm(dim=1).mean()
            z_norm = z.reshape(B, -1).norm(dim=1).mean()
            step = 2.0 * (snr * z_norm / g_norm.clamp_min(torch.finfo(x.dtype).tiny)) ** 2
            x = x + step * g + (2.0 * step).sqrt() * z
        if i + 1 < len(ts):
            s_next = float(sig[ts[i + 1]])
            g = prior.score_ve(x, t)
            d2 = s_i**2 - s_next**2
            if callback is not None:
                callback(i, x, prior.to_image(x + s_i**2 * g))
            x = x + d2 * g + d2**0.5 * randn()
        else:
            x0 = prior.x0_ve(x, t)
            if callback is not None:
                callback(i, x, prior.to_image(x0))
    return _finish(prior, x0, clamp)
