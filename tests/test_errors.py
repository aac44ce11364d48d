"""User errors raise DiffinvError (a ValueError) from every layer; the CLI relies on the type."""

from __future__ import annotations

import pytest
import torch

from diffinv import operators, priors, solvers
from diffinv.errors import DiffinvError


@pytest.mark.parametrize(
    "call",
    [
        lambda: operators.from_spec("sr4x", (3, 16, 16)),
        lambda: operators.from_spec("sr3", (3, 16, 16)),
        lambda: solvers.get_class("no-such-method"),
        lambda: solvers.get("pinv", None, iters=0),
        lambda: solvers.get("pinv", None, nonsense=1),
        lambda: priors.load("no-such-prior-name"),
    ],
    ids=[
        "malformed spec",
        "size not divisible",
        "unknown method",
        "bad value",
        "unknown param",
        "unknown prior",
    ],
)
def test_user_errors_are_diffinv_errors(call):
    with pytest.raises(DiffinvError) as info:
        call()
    assert "\n" not in str(info.value).strip()
    assert isinstance(info.value, ValueError)  # code written against `except ValueError` still works


def test_bad_measurement_is_a_diffinv_error():
    op = operators.from_spec("sr2", (1, 8, 8))
    solver = solvers.get("pinv")
    y = torch.full((1, *op.out_shape), float("nan"))
    with pytest.raises(DiffinvError, match="NaN"):
        solver(y, op)
    with pytest.raises(DiffinvError, match="sigma_y"):
        solver(torch.zeros(1, *op.out_shape), op, sigma_y=-1.0)
