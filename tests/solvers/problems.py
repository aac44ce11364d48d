"""Small linear-Gaussian test problems with exact answers, shared by the solver tests."""

from __future__ import annotations

import math

import torch

from diffinv.operators.base import LinearOperator, SVDOperator
from diffinv.priors import GaussianPrior, VPSchedule

F64 = torch.float64


def smooth_covariance(shape, length: float = 1.5, var: float = 0.04, nugget: float = 1e-3) -> torch.Tensor:
    """A correlated pixel covariance: var * exp(-d^2 / (2 length^2)) within a channel, 0.5 across."""
    C, H, W = shape
    yy, xx = torch.meshgrid(torch.arange(H, dtype=F64), torch.arange(W, dtype=F64), indexing="ij")
    pos = torch.stack([yy.flatten(), xx.flatten()], 1)
    d2 = ((pos[:, None] - pos[None]) ** 2).sum(-1)
    spatial = var * torch.exp(-d2 / (2 * length**2))
    channel = 0.5 * torch.ones(C, C, dtype=F64) + 0.5 * torch.eye(C, dtype=F64)
    return torch.kron(channel, spatial) + nugget * torch.eye(C * H * W, dtype=F64)


def correlated_prior(shape, mean: float = 0.5, scale: float = 0.5, shift: float = 0.5, T: int = 1000):
    """A GaussianPrior with smooth correlations, model space [-1, 1] by default (like checkpoints)."""
    return GaussianPrior(
        torch.full(shape, mean, dtype=F64), smooth_covariance(shape), VPSchedule.linear(T), scale, shift
    )


def svd_diagonal_prior(
    op: SVDOperator, mean: float = 0.5, seed: int = 0, scale: float = 0.5, shift: float = 0.5, T: int = 1000
) -> GaussianPrior:
    """A GaussianPrior whose covariance is diagonal in the operator's right singular basis V."""
    n = math.prod(op.in_shape)
    g = torch.Generator().manual_seed(seed)
    variances = 0.01 + 0.05 * torch.rand(n, generator=g, dtype=F64)
    Vmat = op.V(torch.eye(n, dtype=F64)).reshape(n, n).T  # columns are V e_i
    cov = (Vmat * variances) @ Vmat.T
    return GaussianPrior(
        torch.full(op.in_shape, mean, dtype=F64), 0.5 * (cov + cov.T), VPSchedule.linear(T), scale, shift
    )


def make_measurement(op, prior: GaussianPrior, sigma_y: float = 0.0, seed: int = 0, batch: int = 1):
    """Ground truth drawn from the prior and its measurement y = A x + sigma_y n (float64)."""
    g = torch.Generator().manual_seed(seed)
    x = prior.sample(batch, g)
    return x, op.measure(x, sigma_y, generator=g)


# ---------------------------------------------------------------------- small dense operators
def selection_operator(shape, keep: int, seed: int = 0):
    """Inpainting-like: observe ``keep`` random pixels (rows of the identity), as a MatrixOperator."""
    from diffinv.operators.dense import MatrixOperator

    n = math.prod(shape)
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(n, generator=g)[:keep].sort().values
    return MatrixOperator(torch.eye(n, dtype=F64)[idx], in_shape=shape)


def wide_operator(shape, m: int, seed: int = 0):
    """A random Gaussian (m, n) matrix with m < n (compressed-sensing-like), entries N(0, 1/n)."""
    from diffinv.operators.dense import MatrixOperator

    n = math.prod(shape)
    g = torch.Generator().manual_seed(seed)
    return MatrixOperator(torch.randn(m, n, generator=g, dtype=F64) / math.sqrt(n), in_shape=shape)


def blur_operator(shape, width: float = 1.0, stride: int = 2):
    """Blur-like: a normalised Gaussian blur (non-negative entries) sampled every ``stride`` pixels."""
    from diffinv.operators.dense import MatrixOperator

    C, H, W = shape
    yy, xx = torch.meshgrid(torch.arange(H, dtype=F64), torch.arange(W, dtype=F64), indexing="ij")
    pos = torch.stack([yy.flatten(), xx.flatten()], 1)
    k = torch.exp(-((pos[:, None] - pos[None]) ** 2).sum(-1) / (2 * width**2))
    k = k / k.sum(1, keepdim=True)
    rows = [i for i in range(H * W) if (i // W) % stride == 0 and (i % W) % stride == 0]
    M = torch.block_diag(*[k[rows]] * C)
    return MatrixOperator(M, in_shape=shape)


def blind_estimate(op, y: torch.Tensor, prior: GaussianPrior) -> torch.Tensor:
    """The correlation-blind estimate A^+ y + (I - A^+ A) mean (ignores the prior covariance)."""
    mean = prior.mean.to(y).expand(y.shape[0], *prior.image_shape)
    return op.project(mean.contiguous(), y)


def oracle_problem(op, prior: GaussianPrior, sigma_y: float, seed: int = 1):
    """``(y, posterior mean, blind error)``: a seeded measurement, its exact posterior mean, and the
    distance of the correlation-blind estimate from it (the bar every usefulness test must beat)."""
    _, y = make_measurement(op, prior, sigma_y, seed=seed)
    post_mean, _ = prior.posterior(op, y, sigma_y)
    return y, post_mean, (blind_estimate(op, y, prior) - post_mean).norm().item()


# ---------------------------------------------------------------------- small operators for tests
def selection_matrix(n: int, m: int, seed: int = 0) -> torch.Tensor:
    """m random rows of the n x n identity (inpainting-like pixel selection)."""
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(n, generator=g)[:m].sort().values
    return torch.eye(n, dtype=F64)[idx]


def random_wide_matrix(n: int, m: int, seed: int = 0) -> torch.Tensor:
    """A Gaussian (m, n) matrix with m < n, scaled so that its singular values are O(1)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(m, n, generator=g, dtype=F64) / math.sqrt(n)


def box_blur_matrix(shape, k: int = 3) -> torch.Tensor:
    """Circular k x k box blur per channel as an (n, n) matrix (has a null space for 6 x 6 and k = 3)."""
    C, H, W = shape
    n = H * W
    K = torch.zeros(n, n, dtype=F64)
    r = k // 2
    for i in range(H):
        for j in range(W):
            for di in range(-r, r + 1):
                for dj in range(-r, r + 1):
                    K[i * W + j, ((i + di) % H) * W + (j + dj) % W] += 1.0 / k**2
    return torch.kron(torch.eye(C, dtype=F64), K)


class DenseNoSVD(LinearOperator):
    """``y = M vec(x)`` without an SVD: pseudo-inverse by the base class's CG (like CT operators)."""

    def __init__(self, matrix: torch.Tensor, in_shape):
        super().__init__(in_shape, (matrix.shape[0],))
        self.register_buffer("matrix", torch.as_tensor(matrix, dtype=F64))
        self.spec = "dense-nosvd"

    def _A(self, x):
        return x.reshape(x.shape[0], -1) @ self._const("matrix", x).T

    def _At(self, y):
        return (y @ self._const("matrix", y)).reshape(y.shape[0], *self.in_shape)


def try_spec(spec: str, shape, seed: int = 0):
    """The library operator for ``spec`` (``operators.from_spec``), or None while it is unavailable."""
    try:
        from diffinv.operators import from_spec

        return from_spec(spec, shape, seed=seed)
    except Exception:  # operator modules may be under construction
        return None


def sample_mean_error(xs: torch.Tensor, mean: torch.Tensor) -> float:
    """L2 distance between the sample mean of ``xs`` (N, ...) and ``mean`` (1, ...)."""
    return float((xs.mean(0) - mean.reshape(xs.shape[1:])).norm())


def matrix_test_ops(shape=(1, 6, 6)) -> dict:
    """Dense SVD operators: pixel selection (inpainting-like), a random wide matrix, a box blur."""
    from diffinv.operators.dense import MatrixOperator

    n = math.prod(shape)
    blur = MatrixOperator(box_blur_matrix(shape), shape)
    blur.pinv_threshold = 1e-9  # its zero singular values come out of the SVD as ~1e-17
    return {
        "select": MatrixOperator(selection_matrix(n, n // 2, seed=1), shape),
        "wide": MatrixOperator(random_wide_matrix(n, n // 3, seed=2), shape),
        "boxblur": blur,
    }


#: library operators used by the solver tests when available: spec -> image shape
REAL_SPECS = {
    "inpaint-random0.5": (1, 6, 6),
    "sr2": (1, 6, 6),
    "deblur-gauss": (1, 6, 6),
    "colorize": (3, 4, 4),
    "cs0.5": (1, 4, 4),
    "ct8": (1, 6, 6),
    "colorize+sr2": (3, 4, 4),
}


def real_test_ops(exclude=()) -> dict:
    """The library operators of :data:`REAL_SPECS` that can be built now."""
    out = {}
    for spec, shape in REAL_SPECS.items():
        op = None if spec in exclude else try_spec(spec, shape)
        if op is not None:
            out[spec] = op
    return out


def expand(y: torch.Tensor, N: int) -> torch.Tensor:
    """Repeat a single measurement (1, ...) N times (contiguous)."""
    return y.expand(N, *y.shape[1:]).contiguous()


def mc_mean_error(
    solver, op, y: torch.Tensor, target: torch.Tensor, sigma_y: float = 0.0, num: int = 300, seed: int = 0
):
    """(||mean of num samples - target||, samples): the samples are drawn as ONE batch (y repeated)."""
    yb = y.expand(num, *y.shape[1:]).contiguous()
    out = solver(yb, op, sigma_y=sigma_y, generator=torch.Generator().manual_seed(seed))
    return (out.mean(0, keepdim=True) - target).norm().item(), out


def small_operators(shape) -> dict:
    """The three generic test operators (selection, wide random matrix, blur), built lazily."""
    return {
        "select": lambda: selection_operator(shape, 5),
        "wide": lambda: wide_operator(shape, 6),
        "blur": lambda: blur_operator(shape),
    }
