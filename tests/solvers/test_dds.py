"""DDS (decomposed diffusion sampling, Chung, Lee, Ye 2024) on exact Gaussian posteriors."""

from __future__ import annotations

import pytest
import torch
from problems import (
    DenseNoSVD,
    blind_estimate,
    correlated_prior,
    make_measurement,
    mc_mean_error,
    oracle_problem,
    small_operators,
    try_spec,
    wide_operator,
)

from diffinv import solvers
from diffinv.errors import DiffinvError

SHAPE = (1, 4, 4)
NUM = 300
STEPS = 50


@pytest.fixture(scope="module")
def prior():
    return correlated_prior(SHAPE)


OPERATORS = small_operators(SHAPE)


@pytest.mark.parametrize(
    "opname, sigma_y",
    [
        ("select", 0.0),
        ("wide", 0.0),
        ("blur", 0.0),
        ("select", 0.05),
        ("wide", 0.05),
        ("wide", 0.1),
        ("blur", 0.1),
    ],
)
def test_sample_mean_beats_correlation_blind_estimate(prior, opname, sigma_y):
    op = OPERATORS[opname]()
    y, post_mean, blind = oracle_problem(op, prior, sigma_y)
    err, _ = mc_mean_error(solvers.get("dds", prior, steps=STEPS), op, y, post_mean, sigma_y=sigma_y, num=NUM)
    print(f"dds {opname} sigma_y={sigma_y}: |mean - posterior mean| = {err:.4f}, blind = {blind:.4f}")
    assert err < 0.75 * blind


def test_warm_start_beats_blind_estimate(prior):
    op = OPERATORS["wide"]()
    _, y = make_measurement(op, prior, 0.0, seed=1)
    post_mean, _ = prior.posterior(op, y, 0.0)
    blind = (blind_estimate(op, y, prior) - post_mean).norm().item()
    solver = solvers.get("dds", prior, steps=20, start=0.5, eta=1.0)
    err, _ = mc_mean_error(solver, op, y, post_mean, num=NUM)
    assert solver.last_nfe == 20
    assert err < 0.5 * blind


def test_converged_cg_is_the_exact_minimiser_and_consistent(prior):
    """Once M >= rank(A) the Krylov space is the whole range of A^T: CG = op.damped_pinv (gamma = 0: A x = y)."""
    op = wide_operator(SHAPE, 6)
    _, y = make_measurement(op, prior, 0.0, seed=2, batch=3)
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    a = solvers.get("dds", prior, steps=10, cg_iters=20)(y, op, generator=g())
    b = solvers.get("dds", prior, steps=10, cg_iters=None)(y, op, generator=g())
    torch.testing.assert_close(a, b, rtol=0, atol=1e-8)
    assert ((op.A(b) - y).flatten(1).norm(dim=1) <= 1e-8 * y.flatten(1).norm(dim=1)).all()
    # with gamma > 0: the CG and the exact damped solve (spectral for an SVD operator) agree too
    a = solvers.get("dds", prior, steps=10, cg_iters=20, gamma=0.3)(
        y, DenseNoSVD(op.matrix, SHAPE), generator=g()
    )
    b = solvers.get("dds", prior, steps=10, cg_iters=None, gamma=0.3)(y, op, generator=g())
    torch.testing.assert_close(a, b, rtol=0, atol=1e-8)


def test_one_cg_step_is_steepest_descent_from_x0(prior):
    """M = 1: x0 + a A^T r with the exact line-search step a = ||A^T r||^2 / (||A A^T r||^2 + gamma ||A^T r||^2)."""
    op = wide_operator(SHAPE, 6)
    solver = solvers.get("dds", prior, cg_iters=1)
    x0 = torch.randn((2, *SHAPE), generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    y = torch.randn((2, 6), generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    for gamma in (0.0, 0.5):
        g = op.At(y - op.A(x0))
        a = g.flatten(1).pow(2).sum(1) / (op.A(g).pow(2).sum(1) + gamma * g.flatten(1).pow(2).sum(1))
        expected = x0 + a.view(-1, 1, 1, 1) * g
        torch.testing.assert_close(solver.refine(x0, y, op, gamma), expected, rtol=0, atol=1e-12)


def test_noise_sets_gamma_and_damps(prior):
    op = OPERATORS["blur"]()
    _, y = make_measurement(op, prior, 0.1, seed=1)
    post_mean, _ = prior.posterior(op, y, 0.1)
    solver = solvers.get("dds", prior, steps=30, cg_iters=None)
    assert solver.gamma_for(0.0) == 0.0 and solver.gamma_for(0.2) == 1.0
    damped, _ = mc_mean_error(solver, op, y, post_mean, sigma_y=0.1, num=100)
    exact, _ = mc_mean_error(
        solvers.get("dds", prior, steps=30, cg_iters=None, gamma=0.0), op, y, post_mean, 0.1, 100
    )
    print(f"dds noisy blur: damped {damped:.4f}, undamped {exact:.4f}")
    assert damped < 0.5 * exact


def test_real_ct_operator_defaults():
    op = try_spec("ct4", (1, 8, 8))  # under-determined (ct8 on 6 x 6 is not)
    if op is None:
        pytest.skip("ct4 unavailable")
    prior6 = correlated_prior((1, 8, 8))
    _, y = make_measurement(op, prior6, 0.0, seed=1)
    post_mean, _ = prior6.posterior(op, y, 0.0)
    blind = (blind_estimate(op, y, prior6) - post_mean).norm().item()
    solver = solvers.get("dds", prior6)  # the CT family's defaults: 200 steps from the FBP, exact solve
    err, x = mc_mean_error(solver, op, y, post_mean, num=100)
    assert solver.params["steps"] == 200 and solver.params["cg_iters"] is None and solver.last_nfe == 200
    assert err < 0.75 * blind
    assert ((op.A(x) - y).flatten(1).norm(dim=1) <= 1e-6 * y.norm()).all()


def test_nfe_determinism_and_float32(prior):
    op = OPERATORS["wide"]()
    _, y = make_measurement(op, prior, 0.05, seed=0, batch=2)
    solver = solvers.get("dds", prior, steps=10)
    a = solver(y, op, 0.05, generator=torch.Generator().manual_seed(1))
    assert solver.last_nfe == 10
    b = solver(y, op, 0.05, generator=torch.Generator().manual_seed(1))
    c = solver(y, op, 0.05, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(a, b, rtol=0, atol=1e-12)
    assert not torch.allclose(a, c)
    prior32 = correlated_prior(SHAPE)
    x32 = solvers.get("dds", prior32, steps=5)(
        y.float(), op, 0.05, generator=torch.Generator().manual_seed(1)
    )
    assert x32.dtype == torch.float32 and torch.isfinite(x32).all()


def test_parameters(prior):
    assert "dds" in solvers.available()
    assert solvers.get("dds", prior).params == {
        "steps": 50,
        "eta": 0.85,
        "cg_iters": 5,
        "gamma": None,
        "start": 1.0,
        "data_tv": 0.0,
        "data_box": False,
        "tv_iters": 20,
        "tv_inner": 10,
        "feasible_rounds": 0,
        "feasible_method": "pocs",
    }
    bad = [
        {"data_tv": -0.1},
        {"data_box": 1},
        {"data_box": "yes"},
        {"tv_iters": 0},
        {"tv_inner": 1.5},
        {"cg_iters": 0},
        {"cg_iters": 2.5},
        {"cg_iters": True},
        {"gamma": -1.0},
        {"gamma": float("inf")},
        {"feasible_rounds": -1},
        {"feasible_rounds": 1.5},
        {"feasible_rounds": True},
        {"feasible_method": "dykstra"},
    ]
    bad += [{"gamma": "x"}, {"start": 0.0}, {"start": 1.5}, {"eta": 1.5}, {"steps": 0}, {"zeta": 1.0}]
    for params in bad:
        with pytest.raises(DiffinvError) as info:
            solvers.get("dds", prior, **params)
        assert "\n" not in str(info.value)


def _data_step(prior, op, y, x0, gamma: float, **params):
    """DDS's data step x^0|t alone (exact quadratic step, then ``tv_refine`` if asked), with the
    ||A||^2 that ``_solve`` would set."""
    from diffinv.solvers.classical import power_norm2

    solver = solvers.get("dds", prior, cg_iters=None, **params)
    solver._norm2 = power_norm2(op, y)
    return solver.refine(x0, y, op, gamma)


def test_the_tv_data_step_converges_to_the_minimiser_of_its_objective(prior):
    """``data_tv > 0``: x^0|t approximately minimises F(x) = ||y - A x||^2 + gamma ||x - x0||^2 +
        data_tv TV(x). Reference: the same FISTA run 15x longer with 5x the FGP iterations; the default
        iteration count must close >= 95% of F's gap between the quadratic minimiser (its start) and
        that reference, the reference must lie below the start (TV pays), and no small random step from
    the reference may lower F (F is convex: a local minimum is the minimum)."""
    from diffinv.operators import from_spec
    from diffinv.solvers.classical import tv_iso

    op = from_spec("ct8", (1, 16, 16))
    g = torch.Generator().manual_seed(3)
    x_true = torch.zeros(2, 1, 16, 16, dtype=torch.float64)
    x_true[:, :, 4:12, 5:11] = 1.0
    y = op.A(x_true) + 0.5 * torch.randn(2, *op.out_shape, generator=g, dtype=torch.float64)
    x0 = x_true + 0.3 * torch.randn(x_true.shape, generator=g, dtype=torch.float64)
    gamma, tv = 2.0, 0.5

    def objective(x):
        return (
            ((y - op.A(x)) ** 2).flatten(1).sum(1)
            + gamma * ((x - x0) ** 2).flatten(1).sum(1)
            + tv * tv_iso(x)
        )

    def refined(**params):
        return _data_step(prior, op, y, x0, gamma, data_tv=tv, **params)

    start = x0 + op.damped_pinv(y - op.A(x0), gamma)
    x_ref = refined(tv_iters=300, tv_inner=50)
    f_start, f_ref = objective(start), objective(x_ref)
    f_default = objective(refined())
    assert (f_ref < f_start - 1.0).all()
    # independent of the algorithm: F is convex, so no step from its minimiser lowers it (steps of
    # norm 0.1 lower F by ~0.1 from the quadratic minimiser; the tolerance is 1e-6 F ~ 1e-4)
    for _ in range(20):
        d = torch.randn(x_ref.shape, generator=g, dtype=torch.float64)
        assert (objective(x_ref + 0.1 * d / d.norm()) >= f_ref - 1e-6 * f_ref.abs()).all()
    assert ((f_default - f_ref) <= 0.05 * (f_start - f_ref)).all()
    assert (f_default >= f_ref - 1e-6 * f_ref.abs()).all()


def _box_step_problem():
    """A CT data step in model units whose unconstrained minimiser leaves the range [-1, 1]."""
    from diffinv.operators import from_spec

    op = from_spec("ct8", (1, 12, 12))
    g = torch.Generator().manual_seed(5)
    x_true = -torch.ones(2, 1, 12, 12, dtype=torch.float64)
    x_true[:, :, 3:9, 2:10] = 1.0  # half at each end of the range, as windowed CT
    y = op.A(x_true) + 0.5 * torch.randn(2, *op.out_shape, generator=g, dtype=torch.float64)
    x0 = x_true + 0.3 * torch.randn(x_true.shape, generator=g, dtype=torch.float64)
    return op, y, x0


def test_the_box_data_step_matches_a_bound_constrained_reference():
    """``data_box`` with ``data_tv = 0``: x^0|t = argmin_{-1 <= x <= 1} ||y - A x||^2 + gamma ||x - x0||^2
    (model units of a [-1, 1] prior, as the shipped networks'). Reference: SciPy's L-BFGS-B, an independent bound-constrained
    solver, on the same quadratic. The plain step leaves the range; the box step stays in it."""
    from scipy.optimize import minimize

    op, y, x0 = _box_step_problem()
    gamma = 1.0
    prior = correlated_prior((1, 12, 12))
    boxed = _data_step(prior, op, y, x0, gamma, data_box=True, tv_iters=400)
    plain = _data_step(prior, op, y, x0, gamma)
    assert plain.min() < -1.05 and plain.max() > 1.05  # the constraint is active
    assert boxed.min() >= -1.0 and boxed.max() <= 1.0
    for i in range(y.shape[0]):

        def f(v, i=i):
            x = torch.from_numpy(v).reshape(1, *op.in_shape)
            r, d = op.A(x) - y[i : i + 1], x - x0[i : i + 1]
            value = (r * r).sum() + gamma * (d * d).sum()
            grad = 2.0 * op.At(r) + 2.0 * gamma * d
            return float(value), grad.flatten().numpy()

        ref = minimize(
            f,
            x0[i].clamp(-1, 1).flatten().numpy(),
            jac=True,
            method="L-BFGS-B",
            bounds=[(-1.0, 1.0)] * x0[i].numel(),
            options={"maxiter": 5000, "ftol": 1e-15, "gtol": 1e-10},
        )
        x_ref = torch.from_numpy(ref.x).reshape(boxed[i].shape)
        err = (boxed[i] - x_ref).norm() / x_ref.norm()
        assert err < 1e-3, err


def test_the_box_tv_data_step_is_optimal_over_the_range():
    """``data_box`` with ``data_tv > 0``: the long-run x^0|t lies in the range and no feasible point
    near it (a random step, clamped back to the range) has a lower F(x) = ||y - A x||^2 + gamma
    ||x - x0||^2 + data_tv TV(x): F is convex on a convex set, so a local minimum there is the
    minimum. The default iteration count closes >= 95% of F's gap from the start to it."""
    from diffinv.solvers.classical import tv_iso

    op, y, x0 = _box_step_problem()
    gamma, tv = 1.0, 0.5
    g = torch.Generator().manual_seed(6)

    def objective(x):
        r = y - op.A(x)
        return (r * r).flatten(1).sum(1) + gamma * ((x - x0) ** 2).flatten(1).sum(1) + tv * tv_iso(x)

    def refined(**params):
        return _data_step(
            correlated_prior((1, 12, 12)), op, y, x0, gamma, data_tv=tv, data_box=True, **params
        )

    start = (x0 + op.damped_pinv(y - op.A(x0), gamma)).clamp(-1, 1)
    x_ref = refined(tv_iters=400, tv_inner=50)
    assert x_ref.min() >= -1.0 and x_ref.max() <= 1.0
    f_ref, f_start, f_default = objective(x_ref), objective(start), objective(refined())
    for _ in range(20):
        d = torch.randn(x_ref.shape, generator=g, dtype=torch.float64)
        moved = (x_ref + 0.1 * d / d.norm()).clamp(-1, 1)
        assert (objective(moved) >= f_ref - 1e-6 * f_ref.abs()).all()
    assert ((f_default - f_ref) <= 0.05 * (f_start - f_ref)).all()


class _SmallEps(torch.nn.Module):
    """A random two-layer convolutional eps-network (time ignored), for SCD's adaptation."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.a, self.b = torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.Conv2d(8, 1, 3, padding=1)
        for w in (self.a.weight, self.b.weight):
            w.data = 0.2 * torch.randn(w.shape, generator=g)

    def forward(self, x, t):
        return 0.3 * self.b(torch.nn.functional.silu(self.a(x)))


def _box_phantoms(op, n: int = 2) -> torch.Tensor:
    """Piecewise-constant images in [0, 1], half their pixels exactly 0 (as windowed CT)."""
    x = torch.zeros(n, *op.in_shape, dtype=torch.float64)
    x[0, :, 3:11, 4:12] = 0.6
    x[0, :, 5:8, 6:9] = 1.0
    x[1, :, 2:9, 3:14] = 0.3
    return x


@pytest.mark.parametrize("method, feasible_method", [("dds", "pocs"), ("dds", "nearest"), ("scd", "pocs")])
def test_feasible_rounds_return_an_image_in_range_that_fits_the_data(method, feasible_method):
    """``feasible_rounds = N`` (noiseless): every data step ends with N rounds of alternating
    projections onto {A x = y} and the model range. The result lies in [0, 1] exactly and fits y
    far better than the range alone allows, while the plain data step leaves the range (the
    Gaussian prior's samples are unbounded); a prior with a network is needed for SCD."""
    from diffinv.operators import from_spec

    op = from_spec("ct8", (1, 16, 16))
    if method == "scd":  # SCD adapts a network: a small random convolutional eps-network
        from diffinv.priors import NetworkPrior, VPSchedule

        prior = NetworkPrior(_SmallEps(), VPSchedule.linear(1000), (1, 16, 16))
        x, params = _box_phantoms(op).float(), {"steps": 4, "adapt_iters": 1}
    else:
        prior, x, params = correlated_prior((1, 16, 16)), _box_phantoms(op), {"steps": 10}
    y = op.A(x)
    outs = {}
    for rounds in (0, 200):
        solver = solvers.get(method, prior, feasible_rounds=rounds, feasible_method=feasible_method, **params)
        outs[rounds] = solver(y, op, generator=torch.Generator().manual_seed(0))
    fitted = outs[200]
    assert fitted.min() >= 0.0 and fitted.max() <= 1.0
    res = (op.A(fitted) - y).flatten(1).norm(dim=1) / y.flatten(1).norm(dim=1)
    assert (res < 1e-2).all(), res
    # the plain result after the same clamp fits y worse: the rounds did the work
    plain = outs[0].clamp(0, 1)
    res_plain = (op.A(plain) - y).flatten(1).norm(dim=1) / y.flatten(1).norm(dim=1)
    assert (res < 0.5 * res_plain).all(), (res, res_plain)


def test_feasible_rounds_refuse_a_noisy_measurement(prior):
    from diffinv.operators import from_spec

    op = from_spec("ct8", (1, 4, 4))
    y = op.A(torch.full((1, *SHAPE), 0.5, dtype=torch.float64))
    solver = solvers.get("dds", prior, steps=2, feasible_rounds=5)
    with pytest.raises(DiffinvError, match="noiseless") as info:
        solver(y, op, sigma_y=0.05, generator=torch.Generator().manual_seed(0))
    assert "\n" not in str(info.value)
