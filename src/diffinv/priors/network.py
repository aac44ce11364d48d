"""Adapt a pretrained denoising network to the :class:`~diffinv.priors.base.Prior` interface.

Two kinds of networks are supported:

* **VP** networks (DDPM / ADM / diffusers ``UNet2DModel``) trained on a discrete
  :class:`VPSchedule`, called as ``net(x_t, t)`` with the integer step ``t``. They predict
  ``epsilon`` (most checkpoints), ``sample`` (x_0) or ``v_prediction``. Learned-sigma models
  (ADM, ``variance_type="learned_range"``) output ``2C`` channels; the first ``C`` are the
  prediction and the rest is discarded.
* **VE** score networks (score-SDE NCSN++, e.g. diffusers ``UNet2DModel`` with
  ``time_embedding_type="fourier"`` as used by ``ScoreSdeVePipeline``), called as
  ``net(x, sigma)`` with the *continuous* noise level ``sigma`` of the VE state
  ``x = x_0 + sigma n``. Such a network returns the score ``s(x, sigma) ~ grad log p_sigma(x)``
  (diffusers' fourier UNet already divides its raw output by ``sigma``; ``ScoreSdeVeScheduler``
  uses it directly as the score, ``x <- x + (sigma_i^2 - sigma_{i-1}^2) s``). The VE schedule is
  exposed through its equivalent VP schedule (``VESchedule.to_vp()``) with the same indices, so
  VP index ``t`` <-> ``sigma_t``, ``x_ve = x_vp / sqrt(abar_t)`` and

      eps_vp(x_vp, t) = -sigma_t s(x_vp / sqrt(abar_t), sigma_t),   x0_ve(x, t) = x + sigma_t^2 s(x, sigma_t).

Device and dtype follow the input: the input is cast to the network's device/dtype for the call
and the output cast back (so a float16 network can be used from float32 solver code).
"""

from __future__ import annotations

import sys

import torch
from torch import nn

from ..errors import DiffinvError
from .base import Prior
from .schedules import VESchedule, VPSchedule

_PREDICTIONS = ("epsilon", "sample", "v_prediction", "score")


def _is_diffusers_model(net: nn.Module) -> bool:
    # a diffusers model can only exist if diffusers was imported: do not pay its import otherwise
    if "diffusers" not in sys.modules:
        return False
    from diffusers import ModelMixin

    return isinstance(net, ModelMixin)


def _infer_image_shape(net: nn.Module) -> tuple[int, int, int] | None:
    cfg = getattr(net, "config", None)
    if cfg is not None and hasattr(cfg, "sample_size") and hasattr(cfg, "in_channels"):
        size = cfg.sample_size
        h, w = (size, size) if isinstance(size, int) else tuple(size)
        return (int(cfg.in_channels), int(h), int(w))
    if hasattr(net, "image_size") and hasattr(net, "in_channels"):
        return (int(net.in_channels), int(net.image_size), int(net.image_size))
    return None


class NetworkPrior(Prior):
    """A :class:`Prior` backed by a denoising network.

    Parameters
    ----------
    net: the network. diffusers models are called as ``net(x, t).sample``, anything else as
        ``net(x, t)`` (returning a tensor); class-conditional ADM gets ``y=class_labels``.
    schedule: a :class:`VPSchedule` for VP networks (integer ``t``), or a :class:`VESchedule`
        for VE score networks (then ``prediction="score"`` and ``prior.schedule`` is
        ``schedule.to_vp()``, kept as ``prior.ve_schedule``).
    image_shape: (C, H, W); inferred from ``net.config`` (diffusers) or ``net.image_size``
        (ADM) when omitted.
    prediction: "epsilon" (default for VP), "sample", "v_prediction" or "score" (VE).
    data_range: the pixel range the network was trained on: (-1, 1) (default, DDPM/ADM) or
        (0, 1) (score-SDE CT-style models); sets scale/shift so that image = scale*model + shift.
    class_labels: optional int or (B,) labels for class-conditional networks.

    Example
    -------
    >>> from diffusers import UNet2DModel                                   # doctest: +SKIP
    >>> prior = NetworkPrior(UNet2DModel.from_pretrained(folder), VPSchedule.linear(1000))
    >>> x0 = prior.x0(x_t, t=500)         # model space; prior.x0_image(...) in [0, 1]
    """

    def __init__(
        self,
        net: nn.Module,
        schedule: VPSchedule | VESchedule,
        image_shape: tuple[int, int, int] | None = None,
        prediction: str | None = None,
        data_range: tuple[float, float] = (-1.0, 1.0),
        class_labels: int | torch.Tensor | None = None,
        clip_x0: bool = True,
    ):
        lo, hi = (float(v) for v in data_range)
        if not hi > lo:
            raise DiffinvError(f"data_range must be (low, high) with high > low, got {data_range}")
        if image_shape is None:
            image_shape = _infer_image_shape(net)
            if image_shape is None:
                raise DiffinvError("image_shape is required for this network (cannot infer it)")
        if isinstance(schedule, VESchedule):
            prediction = prediction or "score"
            if prediction != "score":
                raise DiffinvError("a VESchedule needs prediction='score' (a VE score network)")
            vp = schedule.to_vp()
        elif isinstance(schedule, VPSchedule):
            prediction = prediction or "epsilon"
            if prediction not in _PREDICTIONS[:3]:
                raise DiffinvError(
                    f"prediction for a VP network must be one of {_PREDICTIONS[:3]}, got {prediction!r}"
                )
            vp = schedule
        else:
            raise TypeError(f"schedule must be a VPSchedule or VESchedule, got {type(schedule).__name__}")
        # image = scale * model + shift maps [lo, hi] onto [0, 1].
        super().__init__(vp, image_shape, scale=1.0 / (hi - lo), shift=-lo / (hi - lo))
        self.net = net
        self.clip_x0 = bool(clip_x0)
        self.prediction = prediction
        self.data_range = (lo, hi)
        self.ve_schedule = schedule if isinstance(schedule, VESchedule) else None
        self._diffusers = _is_diffusers_model(net)
        self.class_labels = class_labels
        if self.ve_schedule is not None:
            # the exact VE noise levels fed to the network (not re-derived from abar, to avoid rounding)
            self.ve_sigmas = self.ve_schedule.sigmas.clone()  # float64, CPU; not a buffer (keeps float64)

    @property
    def is_ve(self) -> bool:
        return self.ve_schedule is not None

    # ------------------------------------------------------------------ raw network call
    def _net_dtype_device(self, like: torch.Tensor) -> tuple[torch.dtype, torch.device]:
        for p in self.net.parameters():
            return p.dtype, p.device
        for b in self.net.buffers():
            if b.is_floating_point():
                return b.dtype, b.device
        return like.dtype, like.device

    def call_net(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """One network evaluation: ``x`` (B, C, H, W) and ``t`` (B,) (integer steps for VP networks,
        float sigmas for VE ones). Returns the first C output channels in ``x``'s dtype/device."""
        dtype, device = self._net_dtype_device(x)
        xin = x.to(device=device, dtype=dtype)
        tin = t.to(device=device)
        if tin.is_floating_point():
            tin = tin.to(dtype)
        kwargs = {}
        if self.class_labels is not None:
            y = torch.as_tensor(self.class_labels, dtype=torch.long, device=device)
            kwargs["class_labels" if self._diffusers else "y"] = y.expand(x.shape[0]) if y.dim() == 0 else y
        self.nfe += 1
        out = self.net(xin, tin, **kwargs)
        if hasattr(out, "sample"):
            out = out.sample
        elif isinstance(out, tuple | list):
            out = out[0]
        c = x.shape[1]
        if out.shape[1] == 2 * c:  # learned sigma: [prediction, variance]
            out = out[:, :c]
        elif out.shape[1] != c:
            raise DiffinvError(f"network returned {out.shape[1]} channels for a {c}-channel input")
        return out.to(device=x.device, dtype=x.dtype)

    def _sigma(self, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        sig = self.ve_sigmas.to(device=like.device, dtype=torch.float64)
        if t.is_floating_point():  # between levels: log sigma interpolated (geometric VE schedule: exact)
            t = t.to(device=like.device, dtype=torch.float64)
            lo = t.floor().long().clamp(max=sig.numel() - 1)
            hi = (lo + 1).clamp(max=sig.numel() - 1)
            w = t - lo.to(torch.float64)
            return (sig[lo].log() * (1 - w) + sig[hi].log() * w).exp()
        return sig[t.to(like.device)]

    def _score_ve(self, x: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(score s(x, sigma_t), sigma_t broadcast) for a VE network on the VE state x."""
        sigma = self._sigma(t, x)
        s = self.call_net(x, sigma)  # cast to the network's dtype inside
        return s, sigma.to(x.dtype).reshape(-1, *([1] * (x.dim() - 1)))

    # ------------------------------------------------------------------ Prior hooks
    def _eps(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if self.is_ve:
            ab = self.alpha_bar(t, x_t)
            s, sigma = self._score_ve(x_t / ab.sqrt(), t)
            return -sigma * s
        out = self.call_net(x_t, t)
        if self.prediction == "epsilon":
            return out
        ab = self.alpha_bar(t, x_t)
        if self.prediction == "sample":
            return (x_t - ab.sqrt() * out) / (1 - ab).sqrt()
        return ab.sqrt() * out + (1 - ab).sqrt() * x_t  # v = sqrt(ab) eps - sqrt(1-ab) x0

    def _x0(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if self.is_ve:
            ab = self.alpha_bar(t, x_t)
            x = x_t / ab.sqrt()
            s, sigma = self._score_ve(x, t)
            return x + sigma**2 * s
        if self.prediction == "epsilon":
            return super()._x0(x_t, t)
        out = self.call_net(x_t, t)
        if self.prediction == "sample":
            return out
        ab = self.alpha_bar(t, x_t)
        return ab.sqrt() * x_t - (1 - ab).sqrt() * out

    # VE-native networks: evaluate the VE view directly (no round trip through the VP state).
    def x0_ve(self, x: torch.Tensor, t: torch.Tensor | int) -> torch.Tensor:
        if not self.is_ve:
            return super().x0_ve(x, t)
        t = self._t_batch(t, x)
        s, sigma = self._score_ve(x, t)
        return self._clip(x + sigma**2 * s)

    def score_ve(self, x: torch.Tensor, t: torch.Tensor | int) -> torch.Tensor:
        if not self.is_ve:
            return super().score_ve(x, t)
        t = self._t_batch(t, x)
        return self._score_ve(x, t)[0]

    def extra_repr(self) -> str:
        kind = f"VE {self.ve_schedule}" if self.is_ve else f"VP prediction={self.prediction}"
        return f"{kind}, data_range={self.data_range}, " + super().extra_repr()
