"""DDNM / DDNM+ against exact Gaussian answers (GaussianPrior, float64, tiny images).

Run with ``-s`` to see the measured numbers (posterior-mean errors, variance ratios, usefulness).
"""

from __future__ import annotations

import pytest
import torch
from problems import (
    DenseNoSVD,
    blind_estimate,
    box_blur_matrix,
    correlated_prior,
    expand,
    make_measurement,
    matrix_test_ops,
    random_wide_matrix,
    real_test_ops,
    sample_mean_error,
    selection_matrix,
    svd_diagonal_prior,
    try_spec,
)

from diffinv import solvers
from diffinv.operators.dense import MatrixOperator

S6 = (1, 6, 6)
N6 = 36


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def matrix_ops(shape=S6):
    return matrix_test_ops(shape)


def real_ops():
    return real_test_ops()


# ---------------------------------------------------------------------- consistency
ALL_OPS = {**matrix_ops(), "nosvd-wide": DenseNoSVD(random_wide_matrix(N6, 12, seed=3), S6), **real_ops()}


@pytest.mark.parametrize("name", sorted(ALL_OPS))
@pytest.mark.parametrize(
    "method,params", [("ddnm", {}), ("ddnm", {"noise": "ddim"}), ("ddnm+", {"travel_length": 3})]
)
def test_noiseless_consistency(name, method, params):
    op = ALL_OPS[name]
    prior = correlated_prior(op.in_shape)
    _, y = make_measurement(op, prior, 0.0, seed=4, batch=2)
    x = solvers.get(method, prior, steps=10, **params)(y, op, generator=gen(0))
    assert x.shape == (2, *op.in_shape)
    res = (op.A(x) - y).flatten(1).norm(dim=1)
    assert (res <= 1e-4 * y.flatten(1).norm(dim=1)).all(), (name, res)


# ---------------------------------------------------------------------- exactness (diagonal prior)
def _exact_problem(op):
    prior = svd_diagonal_prior(op, seed=5)
    _, y = make_measurement(op, prior, 0.0, seed=6)
    mean, cov = prior.posterior(op, y, 0.0)
    return prior, y, mean.reshape(-1), cov


EXACT_OPS = {
    "wide-4x4": MatrixOperator(random_wide_matrix(16, 8, seed=7), (1, 4, 4)),
    "select-4x4": MatrixOperator(selection_matrix(16, 6, seed=8), (1, 4, 4)),
}
_sr = try_spec("sr2", (1, 4, 4))
if _sr is not None:
    EXACT_OPS["sr2-4x4"] = _sr


@pytest.mark.parametrize("name", sorted(EXACT_OPS))
@pytest.mark.parametrize("method", ["ddnm", "ddrm"])
def test_posterior_mean_exact(name, method):
    """Sample mean over N = 2000 samples matches the exact posterior mean within 5 standard errors.

    With a prior diagonal in V, the range coordinates are fixed by y and each null coordinate is an
    independent 1-D Gaussian whose mean every (linear, sign-symmetric) update preserves exactly, so
    the only error is Monte-Carlo: SE_i = sqrt(posterior var_i / N) (exact variance, an upper bound
    for these under-dispersed samplers).
    """
    op = EXACT_OPS[name]
    prior, y, mean, cov = _exact_problem(op)
    N = 2000
    xs = solvers.get(method, prior)(expand(y, N), op, generator=gen(1)).reshape(N, -1)
    se = (cov.diagonal().clamp_min(0) / N).sqrt()
    err = (xs.mean(0) - mean).abs()
    z = (err / (se + 1e-12)).max().item()
    print(f"\n[{method} exact mean {name}] max |mean err| = {err.max():.2e}, max err/SE = {z:.2f} (tol 5)")
    assert (err <= 5 * se + 1e-8).all()


def test_variance_ddim_mode_matches_and_default_underdisperses():
    """Posterior variances, diagonal prior, N = 2000, 1000 steps.

    noise="ddim", eta = 1 is DDPM ancestral sampling with the range replaced: per-pixel variance
    ratios must be within 0.15 of 1. Basis: sample-variance SE sqrt(2/N) = 3.2%, plus the known
    discretisation bias of the DDPM step at 1000 steps with an exact denoiser (1.5-4% too small for
    model-space variances 0.04-0.24, computed from the linear recursion), so 0.15 ~ 4% + 3.5 SE.
    The trace ratio (all pixels pooled) must be in [0.87, 1.10].
    DDNM's own update (eta = 0.85) is not marginal preserving and under-disperses: trace ratio < 0.9.
    """
    op = EXACT_OPS["wide-4x4"]
    prior, y, mean, cov = _exact_problem(op)
    N = 2000
    var = cov.diagonal()
    null = var > 1e-10
    ratios = {}
    for label, params in [("ddim eta=1", {"noise": "ddim", "eta": 1.0}), ("ddnm eta=0.85", {})]:
        xs = solvers.get("ddnm", prior, steps=1000, **params)(expand(y, N), op, generator=gen(2)).reshape(
            N, -1
        )
        r = xs.var(0)[null] / var[null]
        ratios[label] = (r, (xs.var(0).sum() / var.sum()).item())
        print(
            f"\n[ddnm variance, {label}] trace ratio {ratios[label][1]:.3f}, per-pixel "
            f"[{r.min():.3f}, {r.max():.3f}]"
        )
    r, tr = ratios["ddim eta=1"]
    assert ((r - 1).abs() <= 0.15).all()
    assert 0.87 <= tr <= 1.10
    assert ratios["ddnm eta=0.85"][1] < 0.9


# ---------------------------------------------------------------------- usefulness (correlated prior)
USE_OPS = {**matrix_ops(), **{k: v for k, v in real_ops().items() if k != "ct8"}}


@pytest.mark.parametrize("name", sorted(USE_OPS))
def test_ddnm_beats_blind_estimate(name):
    op = USE_OPS[name]
    prior = correlated_prior(op.in_shape)
    _, y = make_measurement(op, prior, 0.0, seed=9)
    mean, _ = prior.posterior(op, y, 0.0)
    base = float((blind_estimate(op, y, prior) - mean).norm())
    xs = solvers.get("ddnm", prior)(expand(y, 200), op, generator=gen(3))
    err = sample_mean_error(xs, mean)
    print(f"\n[usefulness noiseless {name}] ddnm {err:.4f}  blind baseline {base:.4f}")
    if base < 1e-8:  # A injective on this problem: both exact
        assert err < 1e-6
    else:
        assert err < 0.75 * base


NOISY_OPS = {**USE_OPS, "nosvd-wide": DenseNoSVD(random_wide_matrix(N6, 12, seed=3), S6)}


@pytest.mark.parametrize("sigma_y", [0.05, 0.1])
@pytest.mark.parametrize("name", sorted(NOISY_OPS))
def test_ddnm_plus_beats_blind_estimate_noisy(name, sigma_y):
    op = NOISY_OPS[name]
    prior = correlated_prior(op.in_shape)
    _, y = make_measurement(op, prior, sigma_y, seed=10)
    mean, _ = prior.posterior(op, y, sigma_y)
    base = float((blind_estimate(op, y, prior) - mean).norm())
    xs = solvers.get("ddnm+", prior)(expand(y, 200), op, sigma_y=sigma_y, generator=gen(4))
    err = sample_mean_error(xs, mean)
    ref = float((prior.mean[None] - mean).norm())  # reference only: the prior mean
    print(
        f"\n[usefulness sigma_y={sigma_y} {name}] ddnm+ {err:.4f}  blind baseline {base:.4f}  "
        f"(prior mean {ref:.4f})"
    )
    assert err < base


# ---------------------------------------------------------------------- DDNM+ specifics
@pytest.mark.parametrize("opname", ["wide", "nosvd"])
@pytest.mark.parametrize("noise", ["ddnm", "ddim"])
def test_ddnm_plus_zero_noise_is_ddnm(opname, noise):
    op = matrix_ops()["wide"] if opname == "wide" else DenseNoSVD(random_wide_matrix(N6, 12, seed=3), S6)
    prior = correlated_prior(S6)
    _, y = make_measurement(op, prior, 0.0, seed=11, batch=3)
    a = solvers.get("ddnm", prior, steps=25, noise=noise)(y, op, generator=gen(5))
    b = solvers.get("ddnm+", prior, steps=25, noise=noise)(y, op, sigma_y=0.0, generator=gen(5))
    assert torch.equal(a, b)


def test_time_travel_cost_and_effect():
    op = matrix_ops()["select"]
    prior = correlated_prior(S6)
    _, y = make_measurement(op, prior, 0.05, seed=12, batch=2)
    plain = solvers.get("ddnm+", prior, steps=20)
    travel = solvers.get("ddnm+", prior, steps=20, travel_length=5, travel_repeat=2)
    xa = plain(y, op, sigma_y=0.05, generator=gen(6))
    xb = travel(y, op, sigma_y=0.05, generator=gen(6))
    # jump points at grid positions 5, 10, 15 (not at the end), each redone r = 2 times over L = 5 steps
    assert plain.last_nfe == 20
    assert travel.last_nfe == 20 + 3 * 2 * 5
    assert not torch.equal(xa, xb)
    xc = travel(y, op, sigma_y=0.05, generator=gen(6))
    assert torch.equal(xb, xc)


def test_ddnm_plus_spectral_scaling_handles_tiny_singular_values():
    """Noisy deblurring with singular values down to ~1e-8: finite output, no noise blow-up."""
    op = try_spec("deblur-gauss", S6) or MatrixOperator(box_blur_matrix(S6), S6)
    prior = correlated_prior(S6)
    x, y = make_measurement(op, prior, 0.1, seed=13, batch=4)
    out = solvers.get("ddnm+", prior, steps=20)(y, op, sigma_y=0.1, generator=gen(7))
    assert torch.isfinite(out).all()
    assert (out - x).abs().max() < 2.0


@pytest.mark.parametrize("opname", ["box-blur", "deblur-gauss"])
def test_ddnm_plus_default_eta_with_noise(opname):
    """eta=None resolves to 1 with noise: with eta < 1 the step carries the (fixed) measurement noise
    of the previous step into the next one, where it adds up coherently with the new copy; against
    the exact Gaussian posterior the default's sample mean is clearly closer than eta = 0.85's."""
    op = MatrixOperator(box_blur_matrix(S6), S6) if opname == "box-blur" else try_spec("deblur-gauss", S6)
    if op is None:
        pytest.skip("deblur-gauss spec unavailable")
    prior = correlated_prior(S6)
    _, y = make_measurement(op, prior, 0.05, seed=10)
    mean, _ = prior.posterior(op, y, 0.05)
    default = solvers.get("ddnm+", prior)
    assert default.params["eta"] is None
    xs = default(expand(y, 300), op, sigma_y=0.05, generator=gen(4))
    x1 = solvers.get("ddnm+", prior, eta=1.0)(expand(y, 300), op, sigma_y=0.05, generator=gen(4))
    assert torch.equal(xs, x1)
    x85 = solvers.get("ddnm+", prior, eta=0.85)(expand(y, 300), op, sigma_y=0.05, generator=gen(4))
    err, err85 = sample_mean_error(xs, mean), sample_mean_error(x85, mean)
    print(f"\n[ddnm+ eta, sigma_y=0.05 {opname}] default (1.0) {err:.4f}  eta 0.85 {err85:.4f}")
    assert err < 0.85 * err85


def _ct_pair(size: int = 8, views: int = 4):
    from diffinv.operators.ct import ParallelBeamCT

    ct = ParallelBeamCT(size, views)
    M = ct.matrix(torch.float64).to_dense()
    return ct, MatrixOperator(M, in_shape=(1, size, size))


@pytest.mark.parametrize("noise", ["ddnm", "ddim"])
def test_ddnm_plus_ct_uses_per_singular_value_scaling(noise):
    """CT has no full SVD, but DDNM+ runs its per-singular-value form through ``partial_svd``:
    the same draws give the same result as on the dense SVD operator of the same matrix."""
    ct, dense = _ct_pair()
    s = dense.singulars_like(torch.empty(0, dtype=torch.float64))
    assert s.min() < 0.05 * s.max()  # far from the scalar form's s_i = 1 assumption
    prior = correlated_prior(ct.in_shape)
    _, y = make_measurement(ct, prior, 0.05, seed=21, batch=3)
    a = solvers.get("ddnm+", prior, steps=30, noise=noise)(y, ct, sigma_y=0.05, generator=gen(8))
    yd = y.reshape(y.shape[0], -1)
    b = solvers.get("ddnm+", prior, steps=30, noise=noise)(yd, dense, sigma_y=0.05, generator=gen(8))
    assert torch.allclose(a, b, atol=1e-8), float((a - b).abs().max())


def test_ddnm_plus_ct_noisy_beats_blind_estimate():
    ct, _ = _ct_pair()
    prior = correlated_prior(ct.in_shape)
    _, y = make_measurement(ct, prior, 0.05, seed=22)
    mean, _ = prior.posterior(ct, y, 0.05)
    base = float((blind_estimate(ct, y, prior) - mean).norm())
    xs = solvers.get("ddnm+", prior)(expand(y, 200), ct, sigma_y=0.05, generator=gen(9))
    err = sample_mean_error(xs, mean)
    print(f"\n[usefulness sigma_y=0.05 ct8x4] ddnm+ {err:.4f}  blind baseline {base:.4f}")
    assert err < 0.5 * base


# ---------------------------------------------------------------------- API behaviour
def test_determinism_and_callback():
    op = matrix_ops()["wide"]
    prior = correlated_prior(S6)
    _, y = make_measurement(op, prior, 0.0, seed=14, batch=2)
    calls = []
    solver = solvers.get("ddnm", prior, steps=10)
    a = solver(
        y, op, generator=gen(8), callback=lambda e: calls.append((e["step"], e["x_t"].shape, e["x0"].shape))
    )
    b = solver(y, op, generator=gen(8))
    c = solver(y, op, generator=gen(9))
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)
    assert [i for i, _, _ in calls] == list(range(10))
    assert calls[0][2] == (2, *S6)
    assert solver.last_nfe == 10 and solver.last_seconds > 0


def test_float32_and_model_space():
    op = matrix_ops()["select"]
    prior = correlated_prior(S6)  # model space [-1, 1]: scale 0.5, shift 0.5
    _, y = make_measurement(op, prior, 0.0, seed=15, batch=2)
    x = solvers.get("ddnm", prior, steps=10)(y.float(), op, generator=gen(10))
    assert x.dtype == torch.float32
    assert (op.A(x.double()) - y).abs().max() < 1e-5


def test_bad_inputs():
    op = matrix_ops()["wide"]
    prior = correlated_prior(S6)
    _, y = make_measurement(op, prior, 0.0, seed=16)
    solver = solvers.get("ddnm+", prior, steps=5)
    with pytest.raises(ValueError, match="NaN"):
        solver(torch.full_like(y, float("nan")), op)
    with pytest.raises(ValueError, match="sigma_y"):
        solver(y, op, sigma_y=-0.1)
    with pytest.raises(ValueError, match="unknown method"):
        solvers.get("ddnm++", prior)
    with pytest.raises(ValueError, match="unknown parameter"):
        solvers.get("ddnm", prior, travel_length=3)  # travel is DDNM+ only
    with pytest.raises(ValueError, match="noise"):
        solvers.get("ddnm", prior, noise="ddpm")
    with pytest.raises(ValueError, match="travel_length"):
        solvers.get("ddnm+", prior, travel_length=-1)
    with pytest.raises(ValueError, match="eta"):
        solvers.get("ddnm", prior, eta=1.5)
    with pytest.raises(ValueError, match="prior"):
        solvers.get("ddnm")


# ---------------------------------------------------------------------- the authors' update
F64 = torch.float64


class _AffineEps(torch.nn.Module):
    """A tiny deterministic eps-network, eps = 2 tanh(x) + 0.3 sin(t / 100): large enough that the raw
    x0 estimate leaves the data range [-1, 1] at high noise, so that the prior's clamp matters."""

    def forward(self, x, t):
        return 2.0 * torch.tanh(x) + 0.3 * torch.sin(t.to(x.dtype) / 100.0).reshape(-1, 1, 1, 1)


def _reference_ddnm(prior, op, y, steps, eta, seed, clip):
    """DDNM's noiseless update written out (the authors' code when ``clip`` is False):

    x0 = (x_t - sqrt(1 - ab) eps) / sqrt(ab)      (clip: clamped to [-1, 1], eps rebuilt from it)
    x0^ = x0 - A^+ (A x0 - y)
    x_t' = sqrt(ab') x0^ + eta sqrt(1 - ab') z + sqrt(1 - ab') sqrt(1 - eta^2) eps
    """
    g = torch.Generator().manual_seed(seed)
    ab_table = prior.schedule.alphas_cumprod
    ts = prior.schedule.timesteps(steps).tolist()
    y_z = (y - 0.5 * op.A(torch.ones((1, *op.in_shape), dtype=F64))) / 0.5  # model space [-1, 1]
    x = torch.randn((y.shape[0], *op.in_shape), generator=g, dtype=F64)
    for i, t in enumerate(ts):
        ab = float(ab_table[t])
        ab_prev = float(ab_table[ts[i + 1]]) if i + 1 < len(ts) else 1.0
        eps = prior.net(x, torch.full((x.shape[0],), t))
        x0 = (x - (1 - ab) ** 0.5 * eps) / ab**0.5
        if clip:
            x0 = x0.clamp(-1.0, 1.0)
            eps = (x - ab**0.5 * x0) / (1 - ab) ** 0.5
        x0_hat = x0 - op.pinv(op.A(x0) - y_z)
        c1, c2 = eta * (1 - ab_prev) ** 0.5, (1 - ab_prev) ** 0.5 * (1 - eta**2) ** 0.5
        z = torch.randn(x.shape, generator=g, dtype=F64) if c1 > 0 else 0.0
        x = ab_prev**0.5 * x0_hat + c1 * z + c2 * eps
    return 0.5 * x0_hat + 0.5


@pytest.mark.parametrize("steps", [2, 5])
def test_clip_x0_false_is_the_authors_update(steps):
    """``clip_x0=False``: raw x0 from the network's eps, and that eps in the step (the DDNM code);
    the default clamps x0 to the data range and rebuilds eps from the clamped x0."""
    from diffinv.priors import NetworkPrior, VPSchedule

    shape = (1, 4, 4)
    prior = NetworkPrior(_AffineEps(), VPSchedule.linear(1000), image_shape=shape)  # clip_x0 = True
    op = MatrixOperator(selection_matrix(16, 6, seed=1), shape)
    y = op.A(torch.rand((2, *shape), generator=gen(3), dtype=F64))
    raw = solvers.get("ddnm", prior, steps=steps, clip_x0=False)(y, op, generator=gen(7))
    clamped = solvers.get("ddnm", prior, steps=steps)(y, op, generator=gen(7))
    ref_raw = _reference_ddnm(prior, op, y, steps, 0.85, 7, clip=False)
    ref_clamped = _reference_ddnm(prior, op, y, steps, 0.85, 7, clip=True)
    torch.testing.assert_close(raw, ref_raw, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(clamped, ref_clamped, rtol=1e-10, atol=1e-10)
    assert (raw - clamped).abs().max() > 1e-3  # the clamp is active on this network
    with pytest.raises(ValueError, match="clip_x0"):
        solvers.get("ddnm", prior, clip_x0=1)


def test_spacing_switch_gives_the_authors_grid():
    """``spacing="skip"`` visits t_i = i * (T // S) (the DDNM code), also when S does not divide T;
    the default agrees with it when S divides T; an unknown rule is refused."""
    from diffinv.operators import from_spec
    from diffinv.priors.steps import grid_times

    prior = correlated_prior((1, 4, 4))
    seen = {}
    for spacing in ("skip", "skip-or-linspace"):
        solver = solvers.get("ddnm", prior, steps=3, spacing=spacing)
        events = []
        solver(torch.zeros(1, 1, 4, 4), from_spec("denoise", (1, 4, 4)), callback=events.append)
        seen[spacing] = [int(e["t"]) for e in events]
    T = prior.schedule.T
    assert seen["skip"] == [2 * (T // 3), T // 3, 0]
    assert seen["skip-or-linspace"] == sorted(grid_times(T, 3).tolist(), reverse=True)
    assert seen["skip-or-linspace"][0] == T - 1
    with pytest.raises(ValueError, match="spacing"):
        solvers.get("ddnm", prior, spacing="uniform")
