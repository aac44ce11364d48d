"""The one conjugate-gradient loop: convergence to the minimum-norm solution, and no blow-up past
the rounding floor of its dtype."""

import pytest
import torch

from diffinv.operators import from_spec
from diffinv.operators.cg import cg


@pytest.mark.parametrize(
    "spec, shape", [("colorize", (3, 16, 16)), ("sr4", (3, 16, 16)), ("inpaint-random0.5", (1, 16, 16))]
)
@pytest.mark.parametrize("iters", [1, 5, 200])
def test_float32_cg_on_a_singular_normal_matrix_stays_at_the_pseudo_inverse(spec, shape, iters):
    """A^T A of these operators is singular with few distinct eigenvalues, so CG converges in a few
    iterations; asked for 1e-12 in float32 it used to go on, amplify the rounding error that leaks
    into the null space, and return ~3e8 after 5 iterations (colorize)."""
    op = from_spec(spec, shape, seed=0)
    g = torch.Generator().manual_seed(0)
    y = op.A(torch.rand(2, *shape, generator=g))
    x = cg(lambda p: op.At(op.A(p)), op.At(y), iters, 1e-12)
    ref = op.pinv(y.double()).float()
    assert torch.isfinite(x).all()
    if iters >= 5:
        assert torch.allclose(x, ref, atol=1e-4 * float(ref.abs().max()))


def test_float64_cg_reaches_the_requested_tolerance():
    A = torch.randn(30, 20, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    M = A.T @ A
    b = torch.randn(3, 20, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    x = cg(lambda p: p @ M, b, 100, 1e-12)
    assert torch.allclose(x @ M, b, atol=1e-9)
