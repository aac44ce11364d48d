"""Fan-beam computed tomography with an equiangular detector (spec ``ct<views>-fan``).

:class:`FanBeamCT` maps a ``(1, N, N)`` image to a ``(1, views, bins)`` sinogram of exact line
integrals (pixel units, like :class:`~diffinv.operators.ct.ParallelBeamCT`) along the rays of
:mod:`diffinv.operators.ct_geometry`: each entry of the sparse matrix is the exact length of a ray
inside a pixel (Siddon's algorithm), so the model is "one ideal ray per detector bin through a
pixelwise-constant image", and the back-projection ``At`` is its exact transpose.

Geometry and defaults (distances in image widths ``N`` pixels):

* ``source_distance`` (source to rotation centre) ``= 2.0``: a fan of ``2 asin(R / D)`` = 41.4
  degrees covers the image corners (``R`` = corner radius ~ ``0.71 N``); clinical scanners have
  ~50 degrees.
* ``detector_distance`` (source to detector) ``= 4.0`` (magnification 2). With an equiangular
  detector the rays are fixed by the source and the fan angles alone, so this distance only
  sets the reported detector pitch ``detector_distance * N * dgamma`` (attribute ``bin_width``).
* ``bins``: the detector always spans the fan that covers the image; the default pitch is one
  pixel at the rotation centre (``bins = ceil(2 gamma_max D)``); ``-bins<n>`` changes the pitch.
* source angles ``beta_v = v * angular_range / views`` degrees, ``angular_range = 360`` (a full
  scan); ``-a<degrees>`` gives a limited-angle (or short) scan.

Reconstruction: :meth:`FanBeamCT.fbp` is the equiangular fan-beam FBP of Kak & Slaney (1988,
section 3.4.2), no rebinning: cosine pre-weighting ``D cos(gamma)``, the fan ramp kernel
``g(n a) = 1 / (8 a^2)`` (``n = 0``), ``-1 / (2 pi^2 sin^2(n a))`` (odd ``n``), ``0`` (even), and a
pixel-driven back-projection (linear interpolation in ``gamma``) with the distance weight
``1 / L^2`` (``L`` = source-to-pixel distance), times the source-angle step. Over 360 degrees
every line is seen twice and the kernel's factor 1/2 accounts for that; a scan over less than
360 degrees uses the same weights (no Parker weights), so short scans show redundancy shading
and limited-angle scans the usual missing-wedge streaks.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import numpy as np
import torch

from ..errors import DiffinvError
from .base import check_tensor
from .ct import FILTERS, ramp_filter_response
from .ct_geometry import corner_radius, fan_default_bins, fan_rays, siddon_matrix
from .ct_sparse import SparseCT, _as_int, cached_matrices, size_and_views

# Pixel-views per chunk of the FBP back-projection (bounds its temporary memory).
_BP_CHUNK = 1 << 22


def fan_filter_response(pad: int, bins: int, dgamma: float, filter: str = "ramp") -> np.ndarray:
    """Real ``rfft`` response (length ``pad // 2 + 1``) of the equiangular fan-beam ramp kernel.

    The kernel (see the module docstring) is laid out circularly on ``pad >= 2 bins`` samples and
    cut at lags ``>= bins`` (never used by a linear convolution of ``bins`` samples; this also
    keeps ``sin(n a)`` away from 0). Windows multiply it like :func:`~.ct.ramp_filter_response`.
    """
    k = np.arange(pad)
    d = np.minimum(k, pad - k)
    g = np.zeros(pad)
    g[0] = 1.0 / (8.0 * dgamma * dgamma)
    odd = (d % 2 == 1) & (d < bins)
    g[odd] = -1.0 / (2.0 * np.pi**2 * np.sin(d[odd] * dgamma) ** 2)
    G = np.fft.rfft(g).real
    window = ramp_filter_response(pad, filter) / ramp_filter_response(pad, "ramp")
    return G * window


class FanBeamCT(SparseCT):
    """Equiangular fan-beam projector of a ``(1, size, size)`` image into ``(1, views, bins)``.

    Parameters
    ----------
    size, views:
        Image side ``N`` and number of source positions.
    bins:
        Detector bins spread over the fan that covers the image (default: one pixel at the
        rotation centre, ``ceil(2 gamma_max D)``; at least 2).
    angles:
        Optional explicit source angles in degrees (1-D, ``views`` finite values).
    source_distance, detector_distance:
        Source-to-centre and source-to-detector distances in image widths (defaults 2.0 and 4.0;
        ``source_distance`` must put the source outside the image's corner circle, and
        ``detector_distance > source_distance``).
    angular_range:
        Degrees spanned by the default source angles (``(0, 360]``, default 360).
    cg_iters, cg_tol, pinv_method, gram_rcond, cache_dir:
        The pseudo-inverse, as for :class:`~diffinv.operators.ct.ParallelBeamCT`
        (:mod:`diffinv.operators.ct_sparse`).
    """

    def __init__(
        self,
        size: int,
        views: int,
        bins: int | None = None,
        angles: torch.Tensor | np.ndarray | Sequence[float] | None = None,
        *,
        source_distance: float = 2.0,
        detector_distance: float = 4.0,
        angular_range: float = 360.0,
        cg_iters: int | None = None,
        cg_tol: float | None = None,
        pinv_method: str = "auto",
        gram_rcond: float | None = None,
        cache_dir: str | os.PathLike | None = None,
    ):
        size_i, views_i = size_and_views(size, views)
        sd, dd, rng = float(source_distance), float(detector_distance), float(angular_range)
        R = corner_radius(size_i)
        if not (math.isfinite(sd) and sd * size_i > R):
            raise DiffinvError(
                f"fan-beam source_distance={source_distance!r} image widths puts the source inside the "
                f"image's corner circle (needs > {R / size_i:.4f})"
            )
        if not (math.isfinite(dd) and dd > sd):
            raise DiffinvError(
                f"fan-beam detector_distance={detector_distance!r} must exceed source_distance={sd:g}"
            )
        if not (math.isfinite(rng) and 0.0 < rng <= 360.0):
            raise DiffinvError(f"CT angular_range must be in (0, 360] degrees, got {angular_range!r}")
        D = sd * size_i
        gamma_max = math.asin(R / D)
        bins_i = fan_default_bins(size_i, sd) if bins is None else _as_int(bins, "bins")
        if bins_i < 2:
            raise DiffinvError(f"fan-beam CT needs at least 2 detector bins, got bins={bins_i}")
        if angles is None:
            beta = np.arange(views_i, dtype=np.float64) * (rng / views_i)
        else:
            beta = (angles.detach().cpu().double().numpy() if isinstance(angles, torch.Tensor)
                    else np.asarray(angles, dtype=np.float64))  # fmt: skip
            if beta.ndim != 1 or beta.size != views_i:
                raise DiffinvError(
                    f"CT angles must be a 1-D sequence of views={views_i} values (degrees), "
                    f"got shape {tuple(beta.shape)}"
                )
            if not np.all(np.isfinite(beta)):
                raise DiffinvError("CT angles must be finite")
        super().__init__((1, size_i, size_i), (1, views_i, bins_i))
        self.size, self.views, self.bins = size_i, views_i, bins_i
        self.source_distance, self.detector_distance, self.angular_range = sd, dd, rng
        #: source-to-centre distance in pixels, fan half-angle and bin step (radians)
        self.D, self.gamma_max = D, gamma_max
        self.dgamma = 2.0 * gamma_max / bins_i
        #: detector pitch in pixels (arc length on the detector at ``detector_distance``)
        self.bin_width = dd * size_i * self.dgamma
        self.register_buffer("angles", torch.from_numpy(beta.copy()))  # degrees, float64
        gammas = (np.arange(bins_i) - (bins_i - 1) / 2.0) * self.dgamma
        self.register_buffer("gammas", torch.from_numpy(gammas))  # radians, float64

        def build():
            A = siddon_matrix(size_i, *fan_rays(np.deg2rad(beta), gammas, D))
            return A, A.T.tocsr()

        key = ("fan", size_i, bins_i, D, beta.tobytes())
        self._setup(
            cached_matrices(key, build),
            cg_iters=cg_iters,
            cg_tol=cg_tol,
            pinv_method=pinv_method,
            gram_rcond=gram_rcond,
            cache_dir=cache_dir,
        )

    # ----------------------------------------------------------------- reconstruction
    def filter_sinogram(self, y: torch.Tensor, filter: str = "ramp") -> torch.Tensor:
        """Cosine pre-weighting ``D cos(gamma)`` and the fan ramp kernel along the detector axis."""
        check_tensor(y, self.out_shape, "y", f"for {self.name}")
        if filter not in FILTERS:
            raise DiffinvError(f"unknown FBP filter {filter!r}; choose one of {', '.join(FILTERS)}")
        w = (self.D * torch.cos(self.gammas)).to(device=y.device, dtype=y.dtype)
        response = lambda pad: fan_filter_response(pad, self.bins, self.dgamma, filter)  # noqa: E731
        return self._filter_detector(y * w, filter, response) * self.dgamma

    def backproject_fbp(self, q: torch.Tensor) -> torch.Tensor:
        """Pixel-driven, distance-weighted back-projection ``sum_v q_v(gamma'(P)) / L^2(P)`` (not the adjoint).

        Geometry in float64 for float64 input, else float32 (sub-pixel errors ~1e-5 bins).
        """
        B, N, nb = q.shape[0], self.size, self.bins
        dt = torch.float64 if q.dtype == torch.float64 else torch.float32
        c = N // 2
        ar = torch.arange(N, dtype=dt, device=q.device)
        X = (ar - c)[None, :].expand(N, N).reshape(-1)
        Y = (c - ar)[:, None].expand(N, N).reshape(-1)
        beta = torch.deg2rad(self.angles).to(device=q.device, dtype=dt)
        out = torch.zeros(B, N * N, dtype=q.dtype, device=q.device)
        qp = torch.nn.functional.pad(q[:, 0], (1, 1))  # (B, views, bins + 2): out-of-detector reads 0
        per = max(1, _BP_CHUNK // (N * N))
        for v0 in range(0, self.views, per):
            b = beta[v0 : v0 + per, None]
            cb, sb = torch.cos(b), torch.sin(b)
            along = self.D - (X * cb + Y * sb)
            perp = Y * cb - X * sb
            pos = (torch.atan2(perp, along) / self.dgamma + ((nb - 1) / 2.0 + 1.0)).clamp_(0.0, nb + 0.5)
            inv_l2 = 1.0 / (along * along + perp * perp)
            k0 = pos.floor()
            frac = pos - k0
            k0 = k0.long()
            rows = (torch.arange(k0.shape[0], device=q.device)[:, None] + v0) * (nb + 2)
            flat = qp.reshape(B, -1)
            lo = flat[:, (rows + k0).reshape(-1)].reshape(B, *k0.shape)
            hi = flat[:, (rows + k0 + 1).reshape(-1)].reshape(B, *k0.shape)
            val = (lo + (hi - lo) * frac.to(q.dtype)) * inv_l2.to(q.dtype)
            out += val.sum(1)
        return out.reshape(B, 1, N, N)

    def fbp(self, y: torch.Tensor, filter: str = "ramp") -> torch.Tensor:
        """Equiangular fan-beam FBP (module docstring): ``dbeta * sum_v Q_v(gamma') / L^2``."""
        q = self.filter_sinogram(y, filter)
        dbeta = math.radians(self.angular_range) / self.views
        return self.backproject_fbp(q) * dbeta

    def extra_repr(self) -> str:
        return (
            f"size={self.size}, views={self.views}, bins={self.bins}, "
            f"source_distance={self.source_distance:g}, detector_distance={self.detector_distance:g}, "
            f"angular_range={self.angular_range:g}, nnz={self.nnz}, pinv_method={self.pinv_method!r}"
        )
