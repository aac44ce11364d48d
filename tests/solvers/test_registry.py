"""Registry entries of the DDNM / DDRM / DDIM / classical solvers, and the DDIM baseline."""

from __future__ import annotations

import pytest
import torch
from problems import correlated_prior, make_measurement, matrix_test_ops

from diffinv import solvers
from diffinv.solvers.base import _REGISTRY

MINE = {
    "ddnm": True,
    "ddnm+": True,
    "ddrm": True,
    "ddim": True,
    "pinv": False,
    "fista-tv": False,
    "cg-tikhonov": False,
}


def test_available_lists_methods_with_descriptions():
    avail = solvers.available()
    for name, needs_prior in MINE.items():
        assert name in avail, name
        assert isinstance(avail[name], str) and 10 < len(avail[name]) and "\n" not in avail[name]
        cls = _REGISTRY[name]
        assert cls.needs_prior is needs_prior
        assert isinstance(cls.defaults, dict)
    assert _REGISTRY["ddrm"].requires_svd
    assert not any(_REGISTRY[n].requires_svd for n in MINE if n != "ddrm")


@pytest.mark.parametrize("name", sorted(MINE))
def test_get_defaults_and_unknown_params(name):
    prior = correlated_prior((1, 4, 4)) if MINE[name] else None
    solver = solvers.get(name, prior)
    assert solver.params == _REGISTRY[name].defaults
    assert not hasattr(solver, next(iter(solver.params)))  # parameters live in solver.params only
    with pytest.raises(ValueError, match="unknown parameter"):
        solvers.get(name, prior, not_a_parameter=1)
    assert name in repr(solver) or type(solver).__name__ in repr(solver)


def test_defaults_as_specified():
    assert _REGISTRY["ddnm"].defaults == {
        "steps": 100,
        "eta": 0.85,
        "noise": "ddnm",
        "clip_x0": True,
        "spacing": "skip-or-linspace",
    }
    assert _REGISTRY["ddnm+"].defaults["travel_length"] == 0
    assert _REGISTRY["ddrm"].defaults == {"steps": 20, "eta": 0.85, "eta_b": 1.0}
    assert _REGISTRY["ddim"].defaults == {"steps": 100, "eta": 0.0}


def test_ddim_ignores_y():
    op = matrix_test_ops((1, 6, 6))["wide"]
    prior = correlated_prior((1, 6, 6))
    _, y = make_measurement(op, prior, 0.0, seed=0, batch=3)
    solver = solvers.get("ddim", prior, steps=20)
    a = solver(y, op, generator=torch.Generator().manual_seed(1))
    b = solver(torch.zeros_like(y), op, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and a.shape == (3, 1, 6, 6)
    assert solver.last_nfe == 20
    c = solvers.get("ddim", prior, steps=20, eta=1.0)(y, op, generator=torch.Generator().manual_seed(1))
    assert not torch.allclose(a, c)


@pytest.mark.parametrize(
    "name, key, bad, message",
    [
        ("dps", "zeta", float("nan"), "zeta must be a finite number >= 0, got nan"),
        ("reddiff", "lr", 0.0, "lr must be a finite number > 0, got 0.0"),
        ("daps", "tau", -1.0, "tau must be a finite number > 0, got -1.0"),
        ("dds", "gamma", "x", "gamma must be a finite number >= 0 or None, got 'x'"),
        ("mcg", "grad_weight", True, "grad_weight must be a finite number >= 0 or None, got True"),
        ("fista-tv", "lam", float("inf"), "lam must be a finite number >= 0, got inf"),
    ],
)
def test_numeric_hyperparameters_are_checked_with_one_message(name, key, bad, message):
    prior = correlated_prior((1, 4, 4))
    solvers.get(name, prior, **{key: None} if key in ("gamma", "grad_weight") else {})  # the default is fine
    with pytest.raises(ValueError) as info:
        solvers.get(name, prior, **{key: bad})
    assert str(info.value) == message
