"""Closed-form pseudo-inverse of the CT projector: its range SVD from a Gram eigendecomposition.

Used by :class:`~diffinv.operators.ct.ParallelBeamCT` with ``pinv_method="gram"`` (the default
while the smaller Gram matrix has side ``<= gram_limit``).

The closed form comes from the eigendecomposition of the smaller of the two Gram matrices,
``A A^T`` (``m x m``, ``m = views * bins``) or ``A^T A`` (``n x n``, ``n = size^2``), computed once
in float64 on first use (all-zero rows / columns of ``A``, e.g. detector corners no pixel
reaches, are left out).
With ``A A^T = Q diag(w) Q^T`` and the eigenvalues ``w > gram_rcond * max(w)`` kept,
``s = sqrt(w)``, ``U = Q`` and ``V = A^T Q / s`` is the SVD of ``A`` restricted to its numerical
range (for the ``A^T A`` side, ``V = Q`` and ``U = A Q / s``), and ``A^+ = V diag(1/s) U^T``: two
dense products per call. The Gram matrix squares the condition number, so the threshold on its
eigenvalues, ``gram_rcond = 1e-12``, keeps singular values down to ``1e-6 * max(s)``: float64
eigenvalue errors are ``~1e-16 * max(w)``, so kept directions are accurate to ~1e-4 relative at
worst. Measured Moore-Penrose errors (relative, float64): <= 1e-6 at 16-24 px with 7-60 views
(e.g. 6e-10 at 24 px / 24 views, ``cond(A)`` ~1.4e4, where 2000 CG iterations do not converge)
and at 64 px / 8-18 views (5e-8; ``cond(A)`` 1.3e5 at 18 views); at 64 px / 30 views
``A A^+ A = A`` holds to 2e-7 but ``A^+ A A^+ = A^+`` and the orthogonality of the residual to
range(A) only to ~3e-6 (errors of the eigenvectors of the smallest kept eigenvalues, amplified
by ``1/s``; far below what float32 solvers resolve). Directions with smaller singular values
(exactly zero for the unused detector corners and, with few views, the null space) are treated
as null directions.

Measured one-off cost (``torch.linalg.eigh``, one thread, 2-core CPU under heavy load): 64 px
with 8 / 12 / 18 / 30 views (Gram side 648 / 984 / 1476 / 2474 after dropping zero rows)
0.3 / 0.6 / 1.5 / 6 s; the eigendecomposition grows like ``side^3`` (4096, e.g. 64 px with
>= 46 views: ~30 s; 8192: minutes).
Memory: ``U`` and ``V`` in float64, ``8 (m + n) r`` bytes (``r`` = rank kept; 64 px / 30 views:
130 MB), plus a copy per other dtype used. Per call: ``2 B r (m + n)`` flops; measured at 64 px,
float32: 0.6 / 2.4 / 10 ms for one image and 5 / 18 / 49 ms for a batch of 50 (8 / 18 / 30
views), against 1-2 s for one CG solve. Factors are shared between operators of the same
geometry in one process (up to 1 GiB of the most recently used) and, if ``cache_dir`` or the
environment variable ``DIFFINV_CACHE_DIR`` is set, the Gram eigendecomposition is saved there (``ct/gram-<hash of A>.npz``, written atomically,
read without pickle) and reused across processes.
"""

from __future__ import annotations

import collections
import hashlib
import os
import tempfile
import threading
import warnings
from pathlib import Path

import numpy as np
import scipy.sparse
import torch

#: Range SVDs kept in memory per process (least recently used dropped beyond this many bytes; the
#: newest is always kept), shared by operators of the same geometry, e.g. the
#: ``from_spec("ct30", ...)`` that every pipeline call builds.
_SVD_MEMORY_BYTES = 1 << 30
_SVD_MEMORY: collections.OrderedDict = collections.OrderedDict()
_SVD_LOCK = threading.Lock()


def _matrix_key(A: scipy.sparse.csr_matrix) -> str:
    """A digest of the projection matrix itself (so a cache can never outlive a projector change)."""
    h = hashlib.sha256()
    h.update(np.asarray(A.shape, dtype=np.int64).tobytes())
    for arr in (A.indptr.astype(np.int64), A.indices.astype(np.int64), A.data.astype(np.float64)):
        h.update(np.ascontiguousarray(arr).tobytes())
    return h.hexdigest()[:32]


def _gram_side(A: scipy.sparse.csr_matrix) -> tuple[str, np.ndarray, np.ndarray]:
    """``(side, rows, cols)``: the non-zero rows and columns of ``A`` and which Gram matrix is smaller."""
    rows = np.flatnonzero(np.diff(A.indptr))
    cols = np.unique(A.indices)
    return ("rows" if rows.size <= cols.size else "cols"), rows, cols


def _gram_eigh(A: scipy.sparse.csr_matrix, key: str, cache_dir: Path | None):
    """``(side, index, w, Q)``: eigendecomposition ``G = Q diag(w) Q^T`` (ascending) of the smaller Gram matrix.

    ``side`` is ``"rows"`` (``G = A_s A_s^T``) or ``"cols"`` (``G = A_s^T A_s``), where ``A_s``
    keeps only the non-zero rows and columns of ``A``; ``index`` lists the rows resp. columns.
    """
    path = None if cache_dir is None else Path(cache_dir) / "ct" / f"gram-{key}.npz"
    if path is not None:
        out = _load_gram(path, A.shape)
        if out is not None:
            return out
    side, rows, cols = _gram_side(A)
    As = A[rows][:, cols]
    G = (As @ As.T if side == "rows" else As.T @ As).toarray()
    # torch's LAPACK (MKL syevd) follows torch.set_num_threads; on a busy machine it was ~5-10x
    # faster than scipy's OpenBLAS build.
    w_t, Q_t = torch.linalg.eigh(torch.from_numpy(G))
    w, Q = w_t.numpy(), Q_t.numpy()
    out = (side, (rows if side == "rows" else cols).astype(np.int64), w, Q)
    if path is not None:
        _save_gram(path, out)
    return out


def _range_svd(
    A: scipy.sparse.csr_matrix, rcond: float, cache_dir: Path | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(U, s, V)`` float64 with ``A ~= U diag(s) V^T`` on the numerical range (see the module doc).

    ``U`` is ``(m, r)``, ``V`` is ``(n, r)``, both with orthonormal columns, ``s`` descending,
    ``s^2 > rcond * max(s^2)``.
    """
    key = _matrix_key(A)
    with _SVD_LOCK:
        hit = _SVD_MEMORY.get((key, rcond))
        if hit is not None:
            _SVD_MEMORY.move_to_end((key, rcond))
            return hit
    side, index, w, Q = _gram_eigh(A, key, cache_dir)
    m, n = A.shape
    wmax = float(w[-1]) if w.size else 0.0
    keep = np.flatnonzero(w > rcond * wmax) if wmax > 0 else np.zeros(0, dtype=np.int64)
    keep = keep[::-1]  # descending singular values
    s = np.sqrt(w[keep])
    if side == "rows":
        U = np.zeros((m, keep.size))
        U[index] = Q[:, keep]
        V = np.asarray(A.T @ U) / s
    else:
        V = np.zeros((n, keep.size))
        V[index] = Q[:, keep]
        U = np.asarray(A @ V) / s
    out = (np.ascontiguousarray(U), s, np.ascontiguousarray(V))
    with _SVD_LOCK:
        _SVD_MEMORY[(key, rcond)] = out
        total = sum(u.nbytes + v.nbytes for u, _, v in _SVD_MEMORY.values())
        while len(_SVD_MEMORY) > 1 and total > _SVD_MEMORY_BYTES:
            _, (u, _, v) = _SVD_MEMORY.popitem(last=False)
            total -= u.nbytes + v.nbytes
    return out


def _load_gram(path: Path, shape: tuple[int, int]):
    """A saved eigendecomposition, or None when missing/unreadable/inconsistent (then recomputed)."""
    try:
        with np.load(path, allow_pickle=False) as f:
            side, index, w, Q = str(f["side"]), f["index"], f["w"], f["Q"]
    except (OSError, ValueError, KeyError):
        return None
    limit = shape[0] if side == "rows" else shape[1]
    d = index.size
    if (
        side not in ("rows", "cols")
        or index.ndim != 1
        or (d and (index.min() < 0 or index.max() >= limit))
        or w.shape != (d,)
        or Q.shape != (d, d)
        or not (np.all(np.isfinite(w)) and np.all(np.isfinite(Q)))
    ):
        return None
    return side, index.astype(np.int64), w.astype(np.float64), Q.astype(np.float64)


def _save_gram(path: Path, out) -> None:
    """Write atomically (temporary file + rename); failures only cost the cache."""
    side, index, w, Q = out
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=path.stem, suffix=".tmp.npz", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez(f, side=np.array(side), index=index, w=w, Q=Q)
            os.replace(tmp, path)
        except BaseException:
            os.unlink(tmp)
            raise
    except OSError as e:
        warnings.warn(f"could not write the CT Gram cache {path}: {e}", stacklevel=3)
