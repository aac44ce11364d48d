"""The prior interface every solver uses.

A :class:`Prior` wraps a denoising network and its noise schedule. All priors expose the
variance-preserving (VP) view over a discrete schedule (``prior.schedule``, a
:class:`~diffinv.priors.schedules.VPSchedule`):

    x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps                                  (VP)
    x0(x_t, t)    = (x_t - sqrt(1 - abar_t) eps(x_t, t)) / sqrt(abar_t)            (Tweedie)
    score(x_t, t) = -eps(x_t, t) / sqrt(1 - abar_t)

and the equivalent variance-exploding (VE) view used by score-SDE samplers, with
``sigma_t = sqrt((1 - abar_t)/abar_t)`` and ``x_ve = x_vp / sqrt(abar_t)``:

    x0_ve(x, t) = x0(sqrt(abar_t) x, t),   score_ve(x, t) = (x0_ve(x, t) - x) / sigma_t^2.

VE-native networks (NCSN++) are wrapped so that both views are exact for them too.

Spaces: ``x_t``, ``eps``, ``x0`` and ``score`` live in the **model space** of the network (most
checkpoints use [-1, 1]). Public images are in [0, 1]; ``to_model`` / ``to_image`` convert
(image = scale * model + shift). Solvers take and return [0, 1] images and convert inside,
``x0_image`` is the Tweedie estimate in [0, 1].
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import nn

from ..errors import DiffinvError
from .schedules import VPSchedule

#: how a clamped x0 estimate differentiates (:attr:`Prior.clip_x0_grad`)
CLIP_GRADS = ("identity", "clamp")


def check_clip_grad(mode, name: str = "clip_grad") -> None:
    """DiffinvError unless ``mode`` is one of :data:`CLIP_GRADS` (``name``: the parameter's name in
    the message; the ``clip_grad`` of DPS, MCG, PiGDM or the prior's ``clip_x0_grad``)."""
    if mode not in CLIP_GRADS:
        raise DiffinvError(f"{name} must be one of {CLIP_GRADS}, got {mode!r}")


class Prior(nn.Module):
    """Base class. Subclasses override ``_eps`` or ``_x0`` (each defaults to the other).

    Parameters
    ----------
    schedule: the VP schedule of the network (VE-native networks: ``VESchedule.to_vp()``).
    image_shape: (C, H, W) the network was trained on.
    scale, shift: image = scale * model + shift ([-1, 1] models: 0.5, 0.5; [0, 1] models: 1, 0).
    """

    def __init__(
        self,
        schedule: VPSchedule,
        image_shape: tuple[int, int, int],
        scale: float = 0.5,
        shift: float = 0.5,
    ):
        super().__init__()
        if scale <= 0:
            raise DiffinvError(f"scale must be > 0, got {scale}")
        self.schedule = schedule
        self.image_shape = tuple(int(s) for s in image_shape)
        self.scale = float(scale)
        self.shift = float(shift)
        #: clamp public x0 estimates to the model's data range (``to_model`` of [0, 1]), like DDPM's
        #: ``clip_denoised``: at large t, x0 = (x_t - sqrt(1 - abar) eps) / sqrt(abar) amplifies any
        #: error of eps by 1/sqrt(abar) (~150 at t = T), so unclipped estimates can leave the data
        #: range by orders of magnitude. Off for exact priors (GaussianPrior), on for networks.
        #: Only x0 estimates are clipped; eps and scores stay the network's own.
        self.clip_x0 = False
        #: how the clamp of ``clip_x0`` differentiates (guidance solvers: DPS, MCG, PiGDM take
        #: J^T v, J = d x0|t / d x_t): "identity" (straight-through: the clamped value, the
        #: unclamped estimate's Jacobian) or "clamp" (the clamp's own derivative, 0 where x0 is
        #: clamped). "identity" by default: the clamp is a safeguard on the estimate, not part of
        #: the posterior mean, whose Jacobian Cov[x_0 | x_t] / (1 - abar_t) does not vanish at the
        #: range's edges. With "clamp", J^T v loses its identity part (x0 ~ x_t / sqrt(abar_t) at
        #: large t, amplified ~1/sqrt(abar_t)) on clamped pixels only, so a data gradient in
        #: range(A^T) leaks into the null space: on faces colorization MCG's step turned the face
        #: red (13.7 dB, against 25.9 dB without its gradient; benchmarks/results/solver_notes.md).
        self.clip_x0_grad = "identity"
        #: number of network evaluations since the last :meth:`reset_nfe`.
        self.nfe = 0

    # ------------------------------------------------------------------ spaces
    def to_model(self, x: torch.Tensor) -> torch.Tensor:
        """[0, 1] image -> model space."""
        return (x - self.shift) / self.scale

    def to_image(self, z: torch.Tensor) -> torch.Tensor:
        """Model space -> [0, 1] image (not clamped)."""
        return z * self.scale + self.shift

    def model_range(self) -> tuple[float, float]:
        """The image range [0, 1] in model units: ``(to_model(0), to_model(1))``."""
        return -self.shift / self.scale, (1 - self.shift) / self.scale

    # ------------------------------------------------------------------ schedule helpers
    def alpha_bar(self, t: torch.Tensor | int, like: torch.Tensor) -> torch.Tensor:
        """abar_t broadcast to ``like`` (shape (B, 1, 1, 1) or scalar), in ``like``'s dtype/device."""
        ab = self.schedule.alpha_bar(torch.as_tensor(t).cpu())
        ab = ab.to(device=like.device, dtype=like.dtype)
        return ab.reshape(-1, *([1] * (like.dim() - 1))) if ab.dim() else ab

    def _t_batch(self, t: torch.Tensor | int | float, x: torch.Tensor) -> torch.Tensor:
        """``t`` as a (B,) tensor: long for training levels; float64 for times between them (a VE
        sampler's continuous grid, see ``VPSchedule.alpha_bar``), which networks take as they take
        whole steps (the sinusoidal time embedding is defined for any real t)."""
        t = torch.as_tensor(t, device=x.device)
        t = t.to(torch.float64) if t.is_floating_point() and bool((t != t.round()).any()) else t.long()
        if t.dim() == 0:
            t = t.expand(x.shape[0])
        if t.shape != (x.shape[0],):
            raise DiffinvError(f"t must be a scalar or have shape ({x.shape[0]},), got {tuple(t.shape)}")
        if (t < 0).any() or (t > self.schedule.T - 1).any():
            raise DiffinvError(f"t must be in [0, {self.schedule.T - 1}]")
        return t

    def reset_nfe(self) -> None:
        self.nfe = 0

    # ------------------------------------------------------------------ VP view
    def eps(self, x_t: torch.Tensor, t: torch.Tensor | int) -> torch.Tensor:
        """Noise estimate eps(x_t, t) (model space)."""
        t = self._t_batch(t, x_t)
        return self._eps(x_t, t)

    def x0(self, x_t: torch.Tensor, t: torch.Tensor | int) -> torch.Tensor:
        """Tweedie estimate E[x_0 | x_t] (model space); clamped to the data range if ``clip_x0``."""
        t = self._t_batch(t, x_t)
        return self._clip(self._x0(x_t, t))

    @contextmanager
    def using_clip_grad(self, mode: str):
        """``with prior.using_clip_grad(mode):`` x0 estimates built inside differentiate the clamp as
        ``mode`` says (:attr:`clip_x0_grad`); guidance solvers use it for their ``clip_grad``."""
        check_clip_grad(mode)
        saved, self.clip_x0_grad = self.clip_x0_grad, mode
        try:
            yield self
        finally:
            self.clip_x0_grad = saved

    def _clip(self, x0: torch.Tensor) -> torch.Tensor:
        if not self.clip_x0:
            return x0
        check_clip_grad(self.clip_x0_grad, "clip_x0_grad")
        clamped = x0.clamp(*self.model_range())
        if self.clip_x0_grad == "identity" and x0.requires_grad:
            return x0 + (clamped - x0).detach()  # the clamped value, the identity's derivative
        return clamped

    def score(self, x_t: torch.Tensor, t: torch.Tensor | int) -> torch.Tensor:
        """grad log p_t(x_t) = -eps / sqrt(1 - abar_t) (model space, VP state)."""
        t = self._t_batch(t, x_t)
        return -self._eps(x_t, t) / (1 - self.alpha_bar(t, x_t)).sqrt()

    def x0_image(self, x_t: torch.Tensor, t: torch.Tensor | int) -> torch.Tensor:
        """Tweedie estimate mapped to [0, 1] image space."""
        return self.to_image(self.x0(x_t, t))

    # ------------------------------------------------------------------ VE view
    def x0_ve(self, x: torch.Tensor, t: torch.Tensor | int) -> torch.Tensor:
        """E[x_0 | x_0 + sigma_t n = x] from the same network (VE state ``x = x_vp / sqrt(abar_t)``)."""
        t = self._t_batch(t, x)
        return self._clip(self._x0(x * self.alpha_bar(t, x).sqrt(), t))

    def score_ve(self, x: torch.Tensor, t: torch.Tensor | int) -> torch.Tensor:
        """grad log p_sigma_t(x) in the VE parametrisation: (x0_ve - x) / sigma_t^2."""
        t = self._t_batch(t, x)
        ab = self.alpha_bar(t, x)
        sigma2 = (1 - ab) / ab
        return (self._x0(x * ab.sqrt(), t) - x) / sigma2

    # ------------------------------------------------------------------ to implement
    def _eps(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if type(self)._x0 is Prior._x0:
            raise NotImplementedError("a Prior must implement _eps or _x0")
        ab = self.alpha_bar(t, x_t)
        return (x_t - ab.sqrt() * self._x0(x_t, t)) / (1 - ab).sqrt()

    def _x0(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if type(self)._eps is Prior._eps:
            raise NotImplementedError("a Prior must implement _eps or _x0")
        ab = self.alpha_bar(t, x_t)
        return (x_t - (1 - ab).sqrt() * self._eps(x_t, t)) / ab.sqrt()

    def extra_repr(self) -> str:
        return f"image_shape={self.image_shape}, schedule={self.schedule}, scale={self.scale}, shift={self.shift}"
