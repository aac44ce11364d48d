"""Composition of linear operators: ``x -> ops[0] -> ops[1] -> ... -> ops[-1]``."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from diffinv.operators.base import LinearOperator, Region, WindowRule

from ..errors import DiffinvError


class ComposedOperator(LinearOperator):
    """The chain ``A = A_L ... A_2 A_1`` of ``ops = [A_1, ..., A_L]``, applied left to right.

    ``A(x) = ops[-1].A(... ops[1].A(ops[0].A(x)))``; the adjoint applies the factors' adjoints in
    reverse order, ``At(y) = ops[0].At(... ops[-1].At(y))``. Each factor's ``out_shape`` must equal
    the next factor's ``in_shape``; ``in_shape = ops[0].in_shape``, ``out_shape = ops[-1].out_shape``.

    Pseudo-inverse
    --------------
    Lemma: if ``N N^T = c I`` with ``c > 0`` then ``(M N)^dagger = N^dagger M^dagger`` for any
    ``M`` (with ``N^dagger = N^T / c``). Proof: put ``X = N^T M^dagger / c`` and use
    ``N N^T / c = I``: ``(MN) X (MN) = M M^dagger M N = MN``; ``X (MN) X = N^T M^dagger M M^dagger / c
    = X``; ``(MN) X = M M^dagger`` is symmetric; ``X (MN) = N^T (M^dagger M) N / c`` is symmetric.
    These are the four Penrose conditions, so ``X`` is the Moore-Penrose inverse.

    By induction on the chain, with ``N = A_1`` (the first-applied factor) and ``M = A_L ... A_2``:
    if every factor except the last-applied one, ``A_L = ops[-1]``, has orthogonal, equally scaled
    rows (``A_i A_i^T = c_i I``, flagged by ``rows_orthonormal_scaled``), then
    ``A^dagger = A_1^dagger A_2^dagger ... A_L^dagger``: apply ``ops[-1].pinv`` first and
    ``ops[0].pinv`` last. ``A_L`` itself may be anything; its own ``pinv`` is used (so the chain is
    as accurate as that pinv, e.g. a CG one for CT). This is ``pinv_method = "chain"``.

    Otherwise ``pinv`` runs CG on the normal equations of the whole composite from 0
    (:meth:`cg_normal`, which converges to the minimum-norm least-squares solution ``A^dagger y``):
    ``pinv_method = "cg"``. Its cap ``cg_iters`` is the largest of the factors' caps and its
    tolerance ``cg_tol`` the smallest of theirs.

    The composite has ``rows_orthonormal_scaled = True`` when all factors do
    (``A A^T = prod(c_i) I``), so composites nest. A composite of :class:`SVDOperator` factors is
    *not* itself an SVD operator (the product of SVDs is not an SVD in general): ``has_svd`` is
    False and SVD-based solvers (DDRM) must refuse it.
    """

    def __init__(self, ops: Sequence[LinearOperator]):
        ops = list(ops) if not isinstance(ops, LinearOperator) else [ops]
        if not ops:
            raise DiffinvError("ComposedOperator needs at least one operator")
        for i, op in enumerate(ops):
            if not isinstance(op, LinearOperator):
                raise DiffinvError(
                    f"ComposedOperator factor {i} is not a LinearOperator (got {type(op).__name__})"
                )
            for meth in ("_A", "_At"):
                if getattr(type(op), meth) is getattr(LinearOperator, meth):
                    raise DiffinvError(
                        f"ComposedOperator factor {i} ({op.name}) does not implement {meth.lstrip('_')}"
                    )
        for i in range(len(ops) - 1):
            if tuple(ops[i].out_shape) != tuple(ops[i + 1].in_shape):
                raise DiffinvError(
                    f"cannot compose: factor {i} ({ops[i].name}) has out_shape {tuple(ops[i].out_shape)} "
                    f"but factor {i + 1} ({ops[i + 1].name}) has in_shape {tuple(ops[i + 1].in_shape)}"
                )
        super().__init__(ops[0].in_shape, ops[-1].out_shape)
        self.ops = nn.ModuleList(ops)
        self.cg_iters = max(int(op.cg_iters) for op in ops)
        self.cg_tol = min(float(op.cg_tol) for op in ops)
        #: "chain" (exact factor-by-factor pseudo-inverse) or "cg" (CG on the composite).
        self.pinv_method: str = "chain" if all(bool(op.rows_orthonormal_scaled) for op in ops[:-1]) else "cg"

    @property
    def rows_orthonormal_scaled(self) -> bool:  # type: ignore[override]
        return all(bool(op.rows_orthonormal_scaled) for op in self.ops)

    @property
    def name(self) -> str:
        spec = getattr(self, "spec", None)
        return spec or "ComposedOperator(" + " -> ".join(op.name for op in self.ops) + ")"

    def _A(self, x: torch.Tensor) -> torch.Tensor:
        for op in self.ops:
            x = op._A(x)
        return x

    def _At(self, y: torch.Tensor) -> torch.Tensor:
        for op in reversed(self.ops):
            y = op._At(y)
        return y

    def _pinv(self, y: torch.Tensor) -> torch.Tensor:
        if self.pinv_method == "cg":
            return self.cg_normal(y)
        for i in range(len(self.ops) - 1, -1, -1):
            op = self.ops[i]
            try:
                y = op._pinv(y)
            except NotImplementedError as e:
                raise DiffinvError(
                    f"ComposedOperator factor {i} ({op.name}) has no usable pseudo-inverse; "
                    "implement its _pinv or leave the base class's CG default"
                ) from e
        return y

    # ----------------------------------------------------------------- windows
    def window_rule(self) -> WindowRule:
        """The factors' rules chained: alignments multiply; only the last factor may have
        overlapping rows (its support is scaled to input pixels by the alignment before it)."""
        rules = [op.window_rule() for op in self.ops]
        fixed = next((r.fixed_size for r in rules if r.fixed_size), "")
        align = 1
        for i, (op, rule) in enumerate(zip(self.ops, rules)):
            if not rule.refusal and not rule.block_local and i < len(self.ops) - 1:
                rule = WindowRule(refusal=f"{op.name} must be the last factor of a composition")
            if rule.refusal:
                return WindowRule(refusal=rule.refusal, fixed_size=fixed)
            align *= rule.align
        last = rules[-1]
        return WindowRule(align=align, support=last.support * (align // last.align), wrap=last.wrap)

    def restrict_window(self, region: Region) -> tuple[LinearOperator, Region]:
        """The factors' windows chained (a single factor's window when there is one factor)."""
        ops = []
        for op in self.ops:
            win, region = op.restrict_window(region)
            ops.append(win)
        return (ops[0] if len(ops) == 1 else ComposedOperator(ops)), region

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, pinv_method={self.pinv_method!r}"
