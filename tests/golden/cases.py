"""The golden-output cases: one definition shared by ``make_golden.py`` and ``test_golden_outputs.py``.

Every registered solver runs on a small set of operators with tiny seeded random-weight priors,
fixed generators and float64 throughout, and its output is compared with the one stored in
:data:`GOLDEN_FILE` (made by ``tests/golden/make_golden.py`` from the commit recorded in it). The
point is to freeze today's numerics: a refactoring must reproduce every case to :data:`ATOL`.

What is fixed here, and must not change without regenerating the golden file:

* **Priors** (:func:`prior`): :class:`TinyNet`, a tiny conv net whose weights are drawn from its
  own ``torch.Generator`` (no global RNG), float64, in the shape of a denoiser (Wiener shrinkage
  plus a random nonlinear term, so that long samplers are not chaotic), wrapped by
  ``NetworkPrior``: ``"rgb"`` (3, 12, 12) and ``"gray"`` (1, 16, 16) are VP epsilon-predictors on
  ``VPSchedule.linear(1000)`` (data range [-1, 1], the default ``clip_x0=True``); ``"gray-ve"``
  (1, 16, 16) is a VE score network on ``VESchedule()`` with data range [0, 1], as the shipped
  CT prior. float64, so that results agree across CPUs far below ``ATOL`` (float32 kernels
  differ between machines by ~1e-7 relative and steps amplify it).
* **Images** (:func:`ground_truth`): smooth seeded random images in [0, 1], ``batch`` of them.
* **Measurements**: ``op.measure(x, sigma_y, generator=Generator().manual_seed(MEASURE_SEED))``
  with ``op = operators.from_spec(spec, shape, seed=0)``; noiseless and ``sigma_y = 0.05``.
* **Solves**: ``solvers.get(name, prior, **params)(y, op, sigma_y,
  generator=Generator().manual_seed(SOLVE_SEED))``; tiled cases (an image larger than the prior):
  ``tiling.solve_tiled(solver, y, op, sigma_y, seed=SOLVE_SEED)``; the unconditional samplers of
  ``diffinv.priors.sampling`` with ``n=2``, ``dtype=float64``.

The case list (:func:`cases`): every solver of ``diffinv.solvers.available()`` ("mcg" twice: its
VP and VE forms) with explicit few-step parameters (:data:`PARAMS`, so that a change of a
default does not move these cases) on every operator of :data:`OPERATORS`, noiseless and noisy;
one case per solver with the library defaults on sr4 and one on ct8 (the CT family's
``task_defaults``), so that a change of a default *is* caught; cases for parameter branches
(:func:`_extra`: other noise modes, predictors, projections, a step count that does not divide
T, the VE-native network, batches of two, the samplers) and images larger than the prior
(:func:`_tiled`). Pairs that are not run are listed with their reason in :data:`SKIPPED` (the
library refuses them; the test checks that it still does) and :data:`NOT_RUN` (they would repeat
another case, or are not reproducible to ``ATOL``).

Sensitivity (measured when the file was made): multiplying the network's output or y by
``1 + 1e-14 u``, ``u ~ U(-1, 1)``, moved no case by more than 3e-9 (the converged CG of
cg-tikhonov on ct8; every diffusion case < 1e-10), so differences of round-off, such as a
reordered sum, stay far below ``ATOL``; a difference above it is a change of behaviour.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

F64 = torch.float64

#: the stored outputs (one .npz, a key per case, plus ``__meta__``: commit, versions, NFE)
GOLDEN_FILE = Path(__file__).resolve().parents[1] / "data" / "golden_outputs.npz"
#: max abs difference allowed between a run and the stored output (image units, [0, 1])
ATOL = 1e-6

MEASURE_SEED = 1234
SOLVE_SEED = 5678
GT_SEED = 42
NOISE = {"clean": 0.0, "noisy": 0.05}

NATURAL = (3, 12, 12)
GRAY = (1, 16, 16)
TILED = (3, 16, 20)  # larger than the 12 x 12 prior in both directions: restored in windows

#: operator spec -> image shape (the prior follows from the channels)
OPERATORS = {
    "sr4": NATURAL,
    "inpaint-random0.5": NATURAL,
    "colorize": NATURAL,
    "deblur-gauss": NATURAL,
    "colorize+sr4": NATURAL,  # a composite
    "ct8": GRAY,
}

#: explicit few-step parameters per solver variant: (registry name, params)
#: the parameters of MCG's VE form (spelled out: a change of the defaults must not move them); the VP
#: form takes none of them (a parameter of the other form is an error)
_MCG_VE = {
    "snr": 0.16,
    "lam": 1.0,
    "lam_end": 0.6,
    "lam_schedule": "linear",
    "ve_projection": "auto",
    "null_space_grad": True,
    "predictor": "reverse-diffusion",
}
PARAMS: dict[str, tuple[str, dict]] = {
    "pinv": ("pinv", {"use_fbp": True}),
    # converged (stops on tol): an unconverged CG on ct8's ill-conditioned normal equations moves
    # by ~1e-4 under a 1e-14 change of y (finite-precision CG agrees only up to its error)
    "cg-tikhonov": ("cg-tikhonov", {"lam": 0.01, "iters": 500, "tol": 1e-10}),
    "fista-tv": (
        "fista-tv",
        {"lam": 0.02, "iters": 8, "inner": 5, "box": True, "use_fbp": True, "power_iters": 10},
    ),
    "daps": (
        "daps",
        {
            "steps": 4,
            "ode_steps": 2,
            "langevin_steps": 3,
            "lr": 1e-4,
            "lr_min_ratio": 0.01,
            "tau": 0.01,
            "sigma_max": 100.0,
            "sigma_min": 0.1,
        },
    ),
    "ddim": ("ddim", {"steps": 4, "eta": 0.5}),
    "ddnm": ("ddnm", {"steps": 4, "eta": 0.85, "noise": "ddnm"}),
    "ddnm+": ("ddnm+", {"steps": 4, "eta": None, "noise": "ddnm", "travel_length": 0, "travel_repeat": 1}),
    "ddrm": ("ddrm", {"steps": 4, "eta": 0.85, "eta_b": 1.0}),
    "dps": ("dps", {"steps": 4, "zeta": 1.0}),
    "pigdm": ("pigdm", {"steps": 4, "eta": 1.0}),
    "dds": ("dds", {"steps": 4, "eta": 0.85, "cg_iters": 5, "gamma": None, "start": 1.0}),
    "scd": (
        "scd",
        {
            "steps": 4,
            "eta": 0.85,
            "cg_iters": 5,
            "gamma": None,
            "start": 1.0,
            "adapt_iters": 2,
            "adapt_lr": 1e-3,
            "adapter": "full",
            "lora_rank": 4,
            "tv_weight": 0.0,
            "adapt_every": 1,
        },
    ),
    "diffpir": ("diffpir", {"steps": 4, "lam": 1.0, "zeta": 0.1, "start": 1.0}),
    "reddiff": ("reddiff", {"steps": 4, "lr": 0.1, "lam": 0.25}),
    "score-proj": ("score-proj", {"steps": 4, "snr": 0.246, "lam": 0.841, "predictor": "reverse-diffusion"}),
    "mcg-vp": (
        "mcg",
        {
            "form": "vp",
            "steps": 4,
            "grad_weight": 1.0,
            "weight_matrix": "identity",
        },
    ),
    "mcg-ve": (
        "mcg",
        {
            "form": "ve",
            "steps": 4,
            "grad_weight": 0.05,
            "weight_matrix": "pinv",
            **_MCG_VE,
        },
    ),
}

#: the unconditional samplers of ``diffinv.priors.sampling``: (kind, params, prior)
SAMPLERS = (
    ("ddpm", {"steps": 4}, "gray"),
    ("ddim", {"steps": 4, "eta": 0.5}, "gray"),
    ("ve_pc", {"steps": 4, "snr": 0.16, "corrector_steps": 1}, "gray"),
    ("ve_pc", {"steps": 4, "snr": 0.16, "corrector_steps": 1}, "gray-ve"),
)

#: the parameters that select a variant of a solver (its "defaults" case passes only these)
VARIANT_PARAMS: dict[str, dict] = {"mcg-vp": {"form": "vp"}, "mcg-ve": {"form": "ve"}}

#: solvers that use no prior (run on whole images only)
PRIOR_FREE = ("pinv", "cg-tikhonov", "fista-tv")

#: (variant, spec, noise) -> why it is not run: the library refuses it (checked by the test)
SKIPPED: dict[tuple[str, str, str], str] = {
    ("ddrm", "colorize+sr4", "clean"): "DDRM needs an SVD; a ComposedOperator has none",
    ("ddrm", "colorize+sr4", "noisy"): "DDRM needs an SVD; a ComposedOperator has none",
    ("ddrm", "ct8", "clean"): "DDRM needs an SVD; ParallelBeamCT has none (range-only)",
    ("ddrm", "ct8", "noisy"): "DDRM needs an SVD; ParallelBeamCT has none (range-only)",
    ("ddrm:defaults", "ct8", "clean"): "DDRM needs an SVD; ParallelBeamCT has none (range-only)",
    ("pinv", "sr4@16x20", "clean"): "tiling needs a prior: prior-free methods run on whole images",
    ("cg-tikhonov", "sr4@16x20", "clean"): "tiling needs a prior: prior-free methods run on whole images",
    ("fista-tv", "sr4@16x20", "clean"): "tiling needs a prior: prior-free methods run on whole images",
}

#: pairs not run (the library accepts them): they would repeat another case, or are not
#: reproducible to ATOL
NOT_RUN = {
    ("ddim", "*", "noisy"): "DDIM ignores y (prior-only baseline): the noisy case equals the clean one",
    **{
        ("ddim", spec, "clean"): "DDIM ignores y: on every 3-channel operator it equals ddim/sr4/clean"
        for spec in ("inpaint-random0.5", "colorize", "deblur-gauss", "colorize+sr4")
    },
    ("cg-tikhonov:defaults", "ct8", "clean"): "100 CG iterations at lam 1e-3 do not converge on ct8, and "
    "an unconverged CG moved by 1.2e-4 under a 1e-14 relative change of y: not reproducible to ATOL",
    ("pinv", "*", "noisy"): "pinv ignores sigma_y: a noisy y runs the same code (the file is kept < 1 MB)",
    **{
        (v, spec, "noisy"): f"{v} ignores sigma_y: a noisy y runs the same code (noisy on ct8 only)"
        for v in ("cg-tikhonov", "fista-tv")
        for spec in ("sr4", "inpaint-random0.5", "colorize", "deblur-gauss", "colorize+sr4")
    },
}


@dataclass(frozen=True)
class Case:
    """One golden run: ``solvers.get(solver, prior, **dict(params))`` on ``spec`` at ``shape``."""

    variant: str  # label: a key of PARAMS, possibly with a suffix ("ddnm:noise=ddim", "dps:defaults")
    solver: str  # registry name
    params: tuple  # sorted (key, value) pairs passed to solvers.get
    spec: str
    shape: tuple[int, int, int]
    noise: str  # key of NOISE
    batch: int = 1
    prior: str = ""  # "rgb", "gray" or "gray-ve"; "" = from the channels (rgb / gray)
    tiled: bool = False

    @property
    def prior_name(self) -> str:
        return self.prior or ("rgb" if self.shape[0] == 3 else "gray")

    @property
    def sigma_y(self) -> float:
        return NOISE[self.noise]

    @property
    def measurement_key(self) -> str:
        """The stored key of this case's measurement y (shared by the cases that use the same y)."""
        return f"y/{self.spec}@{self.shape[1]}x{self.shape[2]}/{self.noise}/b{self.batch}"

    @property
    def is_sampler(self) -> bool:
        return self.solver.startswith("sampling.")

    @property
    def name(self) -> str:
        if self.is_sampler:
            return f"{self.variant}/{self.prior_name}/b{self.batch}"
        where = self.spec + (f"@{self.shape[1]}x{self.shape[2]}" if self.tiled else "")
        extra = (f"/b{self.batch}" if self.batch != 1 else "") + (f"/{self.prior}" if self.prior else "")
        return f"{self.variant}/{where}/{self.noise}{extra}"


def _case(variant, spec, noise, shape=None, overrides=None, **kw) -> Case:
    """The case of ``variant`` ("ddnm", "ddnm:label", "ddnm:defaults") on ``spec``: PARAMS of the
    solver with ``overrides``, or for a ":defaults" variant only its VARIANT_PARAMS."""
    base = variant.split(":")[0]
    solver, params = PARAMS[base]
    if variant.endswith(":defaults"):
        params = VARIANT_PARAMS.get(base, {})
    params = tuple(sorted({**params, **(overrides or {})}.items()))
    return Case(variant, solver, params, spec, tuple(shape or OPERATORS[spec]), noise, **kw)


def _extra() -> list[Case]:
    """Cases for parameter branches and settings that the grid does not reach."""
    c = _case
    out = [
        # DDNM's other noise mode; DDNM+ with time travel and with noise="ddim"
        c("ddnm:noise=ddim", "inpaint-random0.5", "clean", overrides={"noise": "ddim"}),
        c("ddnm+:travel", "sr4", "noisy", overrides={"travel_length": 1, "travel_repeat": 2}),
        c("ddnm+:noise=ddim", "deblur-gauss", "noisy", overrides={"noise": "ddim", "eta": 0.5}),
        # deterministic DDIM / DDRM
        c("ddim:eta=0", "sr4", "clean", overrides={"eta": 0.0}),
        c("ddrm:eta=0", "colorize", "noisy", overrides={"eta": 0.0, "eta_b": 0.5}),
        # predictors, projections and weights of the VE samplers
        c("score-proj:ancestral", "ct8", "noisy", overrides={"predictor": "ancestral", "lam": 1.0}),
        c(
            "mcg-ve:ancestral+sart",
            "ct8",
            "clean",
            overrides={"predictor": "ancestral", "ve_projection": "sart"},
        ),
        c(
            "mcg-ve:pinv-proj",
            "inpaint-random0.5",
            "noisy",
            overrides={"ve_projection": "pinv", "lam_schedule": "constant", "weight_matrix": "identity"},
        ),
        c("mcg-ve:no-null-grad", "sr4", "clean", overrides={"null_space_grad": False}),
        c("scd:tv-every2", "inpaint-random0.5", "noisy", overrides={"tv_weight": 0.1, "adapt_every": 2}),
        c("mcg-vp:pinv-weight", "ct8", "noisy", overrides={"weight_matrix": "pinv", "grad_weight": 0.5}),
        c("mcg-vp:projection-only", "sr4", "noisy", overrides={"grad_weight": 0.0}),
        # classical variants
        c("pinv:no-fbp", "ct8", "clean", overrides={"use_fbp": False}),
        c("fista-tv:no-box", "deblur-gauss", "noisy", overrides={"box": False, "use_fbp": False}),
        c("cg-tikhonov:lam=0", "colorize+sr4", "clean", overrides={"lam": 0.0}),
    ]
    # a step count that does not divide T = 1000 (the other branch of VPSchedule.timesteps)
    for v in ("ddim", "ddnm", "ddnm+", "dps", "pigdm", "score-proj", "mcg-vp", "mcg-ve"):
        out.append(c(f"{v}:steps=3", "ct8", "noisy", overrides={"steps": 3}))
    out.append(c("ddrm:steps=3", "inpaint-random0.5", "noisy", overrides={"steps": 3}))
    # the VE-native network (NetworkPrior's score branch) for the VE samplers, on CT
    for v in ("score-proj", "mcg-ve"):
        for noise in NOISE:
            out.append(c(v, "ct8", noise, prior="gray-ve"))
    # batches of two different images: per-sample norms and step sizes
    for v in ("ddnm+", "dps", "pigdm", "score-proj", "mcg-vp", "mcg-ve", "fista-tv", "cg-tikhonov"):
        out.append(c(v, "ct8", "noisy", batch=2))
    out.append(c("ddrm", "inpaint-random0.5", "noisy", batch=2))
    # the unconditional samplers of diffinv.priors.sampling (batches of two, float64)
    for kind, params, prior_name in SAMPLERS:
        out.append(
            Case(
                f"sample:{kind}",
                f"sampling.{kind}_sample",
                tuple(sorted(params.items())),
                "",
                GRAY,
                "clean",
                2,
                prior_name,
            )
        )
    return out


def _tiled() -> list[Case]:
    """Images larger than the prior: sr4 (exact windows with an SVD) for every prior solver;
    sr2-bicubic (soft known regions, exact window pseudo-inverse, the final whole-image projection
    of the projecting methods) and deblur-gauss (valid-blur windows) for a few; a noisy inpainting.

    Not deblur-gauss with DDNM or MCG: their windows' pseudo-inverse is a CG solve on a nearly
    singular valid blur, and a 1e-14 relative change of the network's output moved those results
    by 5e-5 and 2.5e-5, too close to ATOL for a golden case (DPS uses no pseudo-inverse: 4e-14)."""
    out = []
    prior_variants = [v for v in PARAMS if v not in PRIOR_FREE]
    for v in prior_variants:
        out.append(_case(v, "sr4", "clean", shape=TILED, tiled=True))
    for v in ("ddnm", "mcg-vp"):
        out.append(_case(v, "sr2-bicubic", "clean", shape=TILED, tiled=True))
    out.append(_case("dps", "deblur-gauss", "clean", shape=TILED, tiled=True))
    for v in ("ddnm+", "ddrm", "score-proj"):
        out.append(_case(v, "inpaint-random0.5", "noisy", shape=TILED, tiled=True))
    return out


@functools.cache
def cases() -> tuple[Case, ...]:
    """All golden cases, in a fixed order (names are unique)."""
    out = []
    for v in PARAMS:
        for spec in OPERATORS:
            for noise in NOISE:
                if (v, spec, noise) in SKIPPED or _not_run(v, spec, noise):
                    continue
                out.append(_case(v, spec, noise))
    # the library defaults on sr4 (a default change must show here) and on ct8 (the CT family's)
    for v in PARAMS:
        for spec in ("sr4", "ct8"):
            if (f"{v}:defaults", spec, "clean") not in SKIPPED and not _not_run(
                f"{v}:defaults", spec, "clean"
            ):
                out.append(_case(f"{v}:defaults", spec, "clean"))
    out += _extra() + _tiled()
    names = [c.name for c in out]
    dupes = {n for n in names if names.count(n) > 1}
    if dupes:
        raise AssertionError(f"duplicate golden case names: {sorted(dupes)}")
    return tuple(out)


def skipped_cases() -> tuple[tuple[Case, str], ...]:
    """The :data:`SKIPPED` pairs as (case, reason) (the library must refuse each: ValueError)."""
    out = []
    for (v, where, noise), why in SKIPPED.items():
        spec, _, size = where.partition("@")
        if size:
            out.append((_case(v, spec, noise, shape=TILED, tiled=True), why))
        else:
            out.append((_case(v, spec, noise), why))
    return tuple(out)


def _not_run(variant, spec, noise) -> bool:
    return (variant, spec, noise) in NOT_RUN or (variant, "*", noise) in NOT_RUN


def registry_names_covered() -> set[str]:
    """Registry names that the cases exercise."""
    return {solver for solver, _ in PARAMS.values()}


# ==================================================================================  the priors
class TinyNet(nn.Module):
    """A tiny denoiser-shaped network with random weights drawn from ``torch.Generator(seed)``.

    Its denoiser is the Wiener shrinkage towards ``mean`` for data of variance ``var`` plus a small
    random nonlinear term (a conv net with a time embedding: a full-resolution path, a 2x pooled
    path and a global mean, so every output pixel depends on a neighbourhood and on the image)
    whose size vanishes with the noise level::

        D(v, s) = mean + var / (var + s^2) (v - mean) + gain s / sqrt(1 + s^2) tanh(h(v, s))

    on the VE state ``v`` at noise level ``s``. A purely random network would make long samplers
    chaotic (a 1e-15 change of its output moved 1000-step DPS by 1.0); this one contracts like a
    trained denoiser, so that round-off stays round-off. ``kind="vp"``: ``forward(x_t, t)`` with
    integer steps on the linear 1000-step schedule returns eps ``(x_t - sqrt(abar) D) / sqrt(1 -
    abar)`` with ``v = x_t / sqrt(abar)``, ``s^2 = (1 - abar) / abar``. ``kind="ve"``:
    ``forward(x, sigma)`` returns the score ``(D - x) / sigma^2`` (an NCSN++-like VE network).
    """

    def __init__(
        self,
        channels: int,
        seed: int,
        kind: str = "vp",
        mean: float = 0.0,
        var: float = 0.25,
        width: int = 8,
        gain: float = 0.3,
    ):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.kind, self.mean, self.var, self.gain = kind, mean, var, gain
        self.freqs = 8

        def param(*shape, scale=1.0):
            fan_in = math.prod(shape[1:]) if len(shape) > 1 else 1
            return nn.Parameter(torch.randn(shape, generator=g, dtype=F64) * scale / math.sqrt(fan_in))

        self.w_in = param(width, channels, 3, 3)
        self.b_in = param(width, scale=0.1)
        self.w_t = param(2 * width, 2 * self.freqs)
        self.w_mid = param(width, width, 3, 3)
        self.w_low = param(width, width, 3, 3)
        self.w_glob = param(width, width, scale=0.5)
        self.w_out = param(channels, width, 3, 3)
        self.b_out = param(channels, scale=0.1)
        betas = torch.linspace(1e-4, 2e-2, 1000, dtype=F64)  # VPSchedule.linear(1000)
        self.register_buffer("alphas_cumprod", torch.cumprod(1 - betas, 0))

    def _h(self, u: torch.Tensor, log_s: torch.Tensor) -> torch.Tensor:
        """The random conv net on the normalised state ``u`` at log noise level ``log_s`` (B,)."""
        F = nn.functional
        k = torch.arange(self.freqs, dtype=F64)
        arg = log_s[:, None] * torch.exp(-k * math.log(100.0) / self.freqs)[None]
        emb = torch.cat([arg.sin(), arg.cos()], 1)
        scale, shift = (emb @ self.w_t.T).chunk(2, 1)
        h = F.conv2d(u, self.w_in, self.b_in, padding=1)
        h = F.silu(h * (1 + 0.5 * torch.tanh(scale[:, :, None, None])) + shift[:, :, None, None])
        low = F.avg_pool2d(h, 2)
        low = F.interpolate(F.conv2d(low, self.w_low, padding=1), scale_factor=2, mode="nearest")
        glob = (h.mean((2, 3)) @ self.w_glob.T)[:, :, None, None]
        h = F.silu(F.conv2d(h, self.w_mid, padding=1) + low + glob) + h
        return torch.tanh(F.conv2d(h, self.w_out, self.b_out, padding=1))

    def _denoise(self, v: torch.Tensor, s2: torch.Tensor) -> torch.Tensor:
        m, var = self.mean, self.var
        u = (v - m) / (var + s2).sqrt()
        h = self._h(u, 0.5 * s2.flatten().log())
        return m + var / (var + s2) * (v - m) + self.gain * (s2 / (1 + s2)).sqrt() * h

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        x = x.to(F64)
        if self.kind == "ve":
            s2 = t.to(F64).reshape(-1, 1, 1, 1) ** 2
            return (self._denoise(x, s2) - x) / s2
        t = t.to(F64)
        lo = t.floor().long().clamp(0, 999)
        hi = (lo + 1).clamp(max=999)
        w = t - lo.to(F64)
        ab = (self.alphas_cumprod[lo] * (1 - w) + self.alphas_cumprod[hi] * w).reshape(-1, 1, 1, 1)
        D = self._denoise(x / ab.sqrt(), (1 - ab) / ab)
        return (x - ab.sqrt() * D) / (1 - ab).sqrt()


@functools.cache
def prior(name: str):
    """The golden priors by name: "rgb", "gray" (VP, epsilon) and "gray-ve" (VE score network)."""
    from diffinv.priors import NetworkPrior, VESchedule, VPSchedule

    if name == "rgb":
        return NetworkPrior(TinyNet(3, seed=1).eval(), VPSchedule.linear(1000), image_shape=NATURAL)
    if name == "gray":
        return NetworkPrior(TinyNet(1, seed=2).eval(), VPSchedule.linear(1000), image_shape=GRAY)
    if name == "gray-ve":  # data in [0, 1], as the shipped CT prior
        net = TinyNet(1, seed=3, kind="ve", mean=0.5, var=0.0625).eval()
        return NetworkPrior(net, VESchedule(), image_shape=GRAY, data_range=(0.0, 1.0))
    raise KeyError(name)


# ==================================================================================  running
def ground_truth(shape, batch: int = 1) -> torch.Tensor:
    """``batch`` smooth random images in [0, 1] (sums of seeded sinusoids plus a little texture)."""
    g = torch.Generator().manual_seed(GT_SEED)
    C, H, W = shape
    yy, xx = torch.meshgrid(torch.arange(H, dtype=F64) / H, torch.arange(W, dtype=F64) / W, indexing="ij")
    out = torch.zeros(batch, C, H, W, dtype=F64)
    for b in range(batch):
        for c in range(C):
            fy, fx, phase = (
                torch.rand(3, generator=g, dtype=F64) * torch.tensor([3.0, 3.0, 2 * math.pi])
            ).tolist()
            out[b, c] = 0.5 + 0.3 * torch.sin(2 * math.pi * (fy * yy + fx * xx) + phase)
        out[b] += 0.1 * (torch.rand(C, H, W, generator=g, dtype=F64) - 0.5)
    return out.clamp(0.0, 1.0)


def operator(case: Case):
    from diffinv.operators import from_spec

    return from_spec(case.spec, case.shape, seed=0)


def measurement(case: Case, op=None) -> torch.Tensor:
    op = operator(case) if op is None else op
    x = ground_truth(case.shape, case.batch)
    return op.measure(x, case.sigma_y, generator=torch.Generator().manual_seed(MEASURE_SEED))


def build_solver(case: Case):
    from diffinv import solvers

    p = prior(case.prior_name) if case.solver not in PRIOR_FREE else None
    return solvers.get(case.solver, p, **dict(case.params))


def run(case: Case) -> tuple[torch.Tensor, torch.Tensor | None, int]:
    """(output x, measurement y, NFE) of one case (y is None for the unconditional samplers)."""
    from diffinv import tiling
    from diffinv.priors import sampling

    if case.is_sampler:
        p = prior(case.prior_name)
        sample = getattr(sampling, case.solver.split(".")[1])
        p.reset_nfe()
        generator = torch.Generator().manual_seed(SOLVE_SEED)
        x = sample(p, case.batch, generator, **dict(case.params), dtype=F64)
        return x, None, p.nfe

    op = operator(case)
    y = measurement(case, op)
    solver = build_solver(case)
    if case.tiled:
        x = tiling.solve_tiled(solver, y, op, sigma_y=case.sigma_y, seed=SOLVE_SEED)
    else:
        x = solver(y, op, sigma_y=case.sigma_y, generator=torch.Generator().manual_seed(SOLVE_SEED))
    return x.detach(), y, int(solver.last_nfe)
