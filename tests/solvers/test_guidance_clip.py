"""The clamp of x0|t and the guidance gradient J^T v (solvers/_guidance.py, Prior.clip_x0_grad).

With a network whose noise estimate is 0, x0|t = x_t / sqrt(abar_t): J = I / sqrt(abar_t). A data
gradient v = A^T r lies in range(A^T), so J^T v must too, whatever pixels the clamp saturates: the
projection of MCG (and the data terms of DPS / PiGDM) then keeps the null space (here: the colour
of a colorization) untouched. The clamp's own derivative (``clip_x0_grad="clamp"``) zeroes J^T v on
saturated pixels and breaks this; on faces it turned MCG's, DPS's and PiGDM's colorizations red.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from diffinv import solvers
from diffinv.errors import DiffinvError
from diffinv.operators import from_spec
from diffinv.priors import NetworkPrior, VPSchedule
from diffinv.solvers._guidance import x0_with_vjp


class ZeroEps(nn.Module):
    def forward(self, x, t):
        return torch.zeros_like(x)


def _setup():
    sched = VPSchedule.linear(1000)
    prior = NetworkPrior(ZeroEps(), sched, (3, 8, 8)).double()
    g = torch.Generator().manual_seed(0)
    t = 600
    ab = float(sched.alpha_bar(t))
    x_t = torch.randn(2, 3, 8, 8, generator=g, dtype=torch.float64)  # x0 = x_t / sqrt(ab): ~1/3 clamped
    op = from_spec("colorize", (3, 8, 8))
    v = op.At(torch.randn(2, *op.out_shape, generator=g, dtype=torch.float64))
    return prior, x_t, t, ab, op, v


def test_identity_mode_keeps_the_range_gradient_in_the_range():
    prior, x_t, t, ab, op, v = _setup()
    x0, vjp = x0_with_vjp(prior, x_t, t)  # clip_grad="identity", the default
    raw = x_t / ab**0.5
    saturated = (raw.abs() > 1).double().mean()
    assert 0.1 < saturated < 0.9  # the clamp is active on part of the image
    assert torch.allclose(x0, raw.clamp(-1, 1), atol=1e-12)  # the value is the clamped estimate
    jtv = vjp(v)
    assert torch.allclose(jtv, v / ab**0.5, atol=1e-10)  # the unclamped Jacobian I / sqrt(ab)
    null = jtv - op.pinv(op.A(jtv))
    assert null.norm() <= 1e-10 * jtv.norm()


def test_clamp_mode_leaks_into_the_null_space():
    prior, x_t, t, ab, op, v = _setup()
    x0, vjp = x0_with_vjp(prior, x_t, t, clip_grad="clamp")
    raw = x_t / ab**0.5
    jtv = vjp(v)
    assert torch.allclose(jtv, torch.where(raw.abs() > 1, 0.0, v / ab**0.5), atol=1e-10)
    null = jtv - op.pinv(op.A(jtv))
    assert null.norm() > 0.3 * jtv.norm()  # what "identity" prevents


def test_clip_grad_mode_is_restored_and_checked():
    prior, x_t, t, *_ = _setup()
    x0_with_vjp(prior, x_t, t, clip_grad="clamp")
    assert prior.clip_x0_grad == "identity"  # the context restores the prior's own mode
    with pytest.raises(DiffinvError, match="clip_grad"):
        x0_with_vjp(prior, x_t, t, clip_grad="sideways")
    prior.clip_x0_grad = "sideways"
    with pytest.raises(DiffinvError, match="clip_x0_grad"):
        prior.x0(x_t, t)


@pytest.mark.parametrize("name", ["dps", "pigdm", "mcg"])
def test_solvers_take_and_check_clip_grad(name):
    prior = _setup()[0]
    assert solvers.get(name, prior).effective_params("colorize")["clip_grad"] == "identity"
    with pytest.raises(DiffinvError, match="clip_grad"):
        solvers.get(name, prior, clip_grad="sideways")


def test_mcg_uses_the_clamp_derivative_on_ct():
    prior = _setup()[0]
    for form in ("vp", "ve"):
        mcg = solvers.get("mcg", prior, form=form)
        assert mcg.effective_params("ct18")["clip_grad"] == "clamp"
        assert (
            solvers.get("mcg", prior, form=form, clip_grad="identity").effective_params("ct18")["clip_grad"]
            == "identity"
        )


def test_the_solver_parameter_reaches_the_gradient():
    """Wiring: DPS's ``clip_grad`` reaches x0_with_vjp (one step from x_T, where x0 saturates)."""
    prior, x_t, t, ab, op, v = _setup()
    y = op.A(torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(1), dtype=torch.float64))
    outs = {}
    for mode in ("identity", "clamp"):
        dps = solvers.get("dps", prior, steps=1, zeta=1.0, clip_grad=mode)
        outs[mode] = dps(y, op, generator=torch.Generator().manual_seed(2))
    assert (outs["identity"] - outs["clamp"]).abs().max() > 1e-3
