"""SCD: steerable conditional diffusion, DDS with the network adapted to the measurement on the way.

References: R. Barbano, A. Denker, H. Chung, T. H. Roh, S. Arridge, P. Maass, B. Jin, J. C. Ye,
"Steerable Conditional Diffusion for Out-of-Distribution Adaptation in Medical Image
Reconstruction", arXiv:2308.14409 (SCD); H. Chung, J. C. Ye, "Deep Diffusion Image Prior for
Efficient OOD Adaptation in 3D Inverse Problems", ECCV 2024, arXiv:2407.10641 (DDIP: the same
adaptation read as a deep image prior, with every weight trainable). Equation numbers are not
quoted: the text we could consult was the abstracts and the SCD authors' code, cited below.

A prior trained on one distribution (chest CT of one source) re-draws its training features on
another (other scanners, other anatomy). SCD steers the network theta towards the measurement while
it samples: at each DDS step (:mod:`.dds`), before the Tweedie estimate is used, K Adam steps on

    L(theta) = mean_j ((A x0|t(x_t; theta) - y)_j)^2 + lambda_TV TV(x0|t(x_t; theta))

(TV: mean absolute difference of neighbouring pixels), then DDS's update with the adapted network:

    x0|t  = x0|t(x_t; theta)                                                       (adapted Tweedie)
    x^0|t = argmin_{x in x0|t + K_M} ||y - A x||^2 + gamma ||x - x0|t||^2            (DDS data step)
    x_t'  = sqrt(abar_t') x^0|t + sqrt(1 - abar_t') (eta z + sqrt(1 - eta^2) eps)    (DDIM)

The adaptation starts afresh for every image of the batch (each image is its own problem), and
the prior's network is restored exactly after each one (:func:`diffinv.priors.adapters.adapted`).

Parameters: those of DDS (``steps``, ``eta``, ``cg_iters``, ``gamma``, ``start``, ``data_tv``, ``data_box``,
``feasible_rounds``; CT defaults as DDS's) and ``adapt_iters`` (K = 3), ``adapt_lr`` (Adam step,
3e-4), ``adapter`` ("full": every weight, as DDIP; "lora": rank-``lora_rank`` adapters, SCD's main
form), ``lora_rank`` (4), ``tv_weight`` (lambda_TV = 0), ``adapt_every`` (adapt at every n-th
step and the last; 1),
``adapt_stop`` (tau; 0: off. Morozov's discrepancy principle: an Adam step is taken only while
mean_j (A x0|t - y)_j^2 > (tau sigma_y)^2 in model units, so that a noisy measurement is not fitted
below its noise; noiseless, sigma_y = 0, it never stops early. Off by default: at tau = 1 under
Poisson noise, I0 = 1e4, 18 views, SCD still scored 25.04 dB against DDS's 25.99 on the tuning
slices, solver_notes.md).
Defaults chosen on 8 real-CT tuning slices (one per TCIA patient, outside ``ct_real.py``'s 16),
8 views, noiseless, 200 steps (single samples; FISTA-TV 23.24 dB, DDS 22.99 dB): full adaptation
K = 1, lr 1e-3: 23.16 dB; K = 3, lr 3e-4: 23.90 dB; K = 3, lr 1e-3: 22.06 dB (one slice diverged,
14.7 dB). LoRA rank 4 at lr 1e-3 moved the result by < 0.1 dB on two slices of this 2 M-parameter
prior (benchmarks/results/solver_notes.md, "SCD").
Under noise, adapt gently: these defaults fit the noise of a low-dose sinogram. Poisson counts,
I0 = 1e4, 18 views, the same tuning slices, with DDS's noisy-data settings (``gamma=10,
data_tv=0.3, data_box=True``): K = 1, lr 1e-4 scored 27.34 dB (seed 1: 27.48) against DDS's 27.11
(27.21), ahead on 15 of the 16 slice-seed pairs; lr 3e-5 / 2e-4 / 3e-4: 27.22 / 27.23 / 27.08,
K = 2 at lr 1e-4: 27.16. On ``ct_real.py``'s 16 slices the posterior mean of 8 such samples scores
27.97 dB against the weighted FISTA-TV's 26.72 and DDS's 27.59 (benchmarks/results/ct-real-poisson-scd/).

NFE: (K + 1) network evaluations per adapted step (K of them with back-propagation through the
network; once the discrepancy stop holds, two: the check and the estimate), counted per image as
for every method (``last_nfe``: the last image's); the images of a batch are adapted one after
another, so a batch of B makes B times as many network calls, each on one image.
Memory: one backward pass through the network; "full" also keeps a copy of the weights and Adam's
two moments per weight.

Deviations from the SCD authors' code (github.com/alexdenker/SteerableConditionalDiffusion,
``algos/scd.py``):

* The loss is on the adapted Tweedie estimate, not on its CG refinement x^0|t: with the exact data
  step (CT's default ``cg_iters=None``) A x^0|t = y, and the loss would keep only its TV term.
* eps in the DDIM step is the noise of the adapted estimate (theirs: the network's output before
  that step's adaptation).
* "full" is our default (their code offers it beside LoRA and a decoder-only mode); they adapt at
  every ``skip``-th step plus the last four, we at every ``adapt_every``-th step and the last.
* We return x^0|t of the last step, as DDS does; theirs returns the adapted network's x0|t.

Example
-------
>>> x = get("scd", prior)(sinogram, op, generator=torch.Generator().manual_seed(0))  # doctest: +SKIP
>>> lora = get("scd", prior, adapter="lora", lora_rank=8, adapt_lr=1e-3)            # doctest: +SKIP
"""

from __future__ import annotations

import torch

from ..errors import DiffinvError
from ..priors.adapters import adapted, check_adapter
from .base import register
from .dds import DDS


def total_variation(x: torch.Tensor) -> torch.Tensor:
    """Anisotropic TV as a mean: mean |x[i+1, j] - x[i, j]| + mean |x[i, j+1] - x[i, j]|."""
    return (x[..., 1:, :] - x[..., :-1, :]).abs().mean() + (x[..., :, 1:] - x[..., :, :-1]).abs().mean()


@register
class SCD(DDS):
    """SCD: DDS whose network takes K Adam steps on ||A x0|t - y||^2 (+ TV) at each step."""

    name = "scd"
    description = (
        "SCD (Barbano et al. 2023) / DDIP: DDS with the network adapted to the measurement at each step"
    )
    defaults = {
        **DDS.defaults,
        "adapt_iters": 3,
        "adapt_lr": 3e-4,
        "adapter": "full",
        "lora_rank": 4,
        "tv_weight": 0.0,
        "adapt_every": 1,
        "adapt_stop": 0.0,
    }
    task_defaults = DDS.task_defaults

    def validate_params(self) -> None:
        super().validate_params()
        p = self.params
        check_adapter(p["adapter"], p["lora_rank"])
        for key in ("adapt_iters", "adapt_every"):
            v = p[key]
            if isinstance(v, bool) or not isinstance(v, int) or v < (0 if key == "adapt_iters" else 1):
                low = "an integer >= 0" if key == "adapt_iters" else "a positive integer"
                raise DiffinvError(f"{key} must be {low}, got {v!r}")
        self.check_numbers("adapt_lr", positive=True)
        self.check_numbers("tv_weight", "adapt_stop")
        if self.prior is not None and getattr(self.prior, "net", None) is None:
            raise DiffinvError(f"scd adapts the prior's network; {type(self.prior).__name__} has none")

    def estimate(self, x, step, y_z, op, callback):
        """K Adam steps on the data misfit of the network's x0|t at ``x``, then x0|t (adapted)."""
        if step.i % int(self.params["adapt_every"]) == 0 or step.last:
            x_fixed = x.detach()
            with torch.enable_grad(), self.prior.using_clip_grad("identity"):
                for _ in range(int(self.params["adapt_iters"])):
                    self._optimizer.zero_grad()
                    x0 = self.prior.x0(x_fixed, step.t)
                    loss = (op.A(x0) - y_z).square().mean()
                    # discrepancy principle: y is fitted to its noise (no .item() sync when off)
                    if self._noise_floor and loss.item() <= self._noise_floor:
                        break
                    if self.params["tv_weight"]:
                        loss = loss + float(self.params["tv_weight"]) * total_variation(x0)
                    loss.backward()
                    self._optimizer.step()
        return super().estimate(x, step, y_z, op, callback)

    def _solve(self, y, op, sigma_y, generator, progress, callback):
        p = self.params
        outs = []
        sigma_z = self.measurement_to_model(y[:1], op, sigma_y)[1]  # one noise level for the batch
        self._noise_floor = (float(p["adapt_stop"]) * float(sigma_z)) ** 2
        for b in range(y.shape[0]):  # one adaptation per image
            # the count left is one image's (the last), as batched methods count theirs; images
            # differ only where the discrepancy stop cuts an adaptation short
            self.prior.reset_nfe()
            with adapted(self.prior.net, p["adapter"], int(p["lora_rank"]), seed=b) as trainable:
                self._optimizer = torch.optim.Adam(trainable, lr=float(p["adapt_lr"]))
                try:
                    outs.append(super()._solve(y[b : b + 1], op, sigma_y, generator, progress, callback))
                finally:
                    del self._optimizer
        return torch.cat(outs)
