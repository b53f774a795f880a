r"""Generic linear-algebra solvers on closures: pivoted (incomplete) Cholesky, Woodbury, conjugate gradient.

These know nothing about kernels. A symmetric positive semi-definite matrix :math:`A \in \mathbb{R}^{N\times N}`
is given only through closures, so dense, KeOps and Triton products all plug into the same code:

* :func:`pivoted_cholesky` reads ``diag(A)`` and single columns ``A[:, i]``;
* :func:`woodbury_solve` solves :math:`(R^\top R + cI) x = v` from a low-rank factor :math:`R`;
* :func:`conjugate_gradient` needs only products :math:`u \mapsto A u` (plus an optional preconditioner).

All three compute in float64 (inputs are upcast) and are not differentiated through: callers that need gradients
use the envelope identity (see :mod:`kernelmmd.gcmmd`), never autograd through these iterations.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch

from ._validate import check_int, check_nonnegative, check_positive
from .errors import ConvergenceWarning, user_stacklevel

__all__ = ["PivotedCholesky", "CGResult", "pivoted_cholesky", "woodbury_solve", "conjugate_gradient"]


@dataclass
class PivotedCholesky:
    """Result of :func:`pivoted_cholesky`: :math:`A \\approx R^\\top R`.

    Attributes:
        R: (rank, N) float64 factor.
        pivots: (rank,) int64, the columns read, in the order chosen.
        rank: number of rows of ``R``.
        trace: trace(A).
        trace_residual: trace(A − RᵀR) ≥ 0 (the sum of the residual diagonal; for a PSD A it bounds the nuclear
            norm of the error).
    """

    R: torch.Tensor
    pivots: torch.Tensor
    rank: int
    trace: float
    trace_residual: float


@dataclass
class CGResult:
    """Result of :func:`conjugate_gradient`.

    Attributes:
        x: the solution, float64, shape of ``b``.
        iterations: number of iterations (matrix-vector products after the first residual).
        residual: final relative residual ‖b − A x‖ / ‖b‖ (the recursively updated residual).
        converged: whether ``residual <= tol``.
    """

    x: torch.Tensor
    iterations: int
    residual: float
    converged: bool


def pivoted_cholesky(
    diag: torch.Tensor | Callable[[], torch.Tensor],
    column: Callable[[int], torch.Tensor],
    max_rank: int,
    tol: float = 0.0,
) -> PivotedCholesky:
    r"""Pivoted incomplete Cholesky of a PSD matrix read through its diagonal and single columns.

    Shawe-Taylor & Cristianini, *Kernel Methods for Pattern Analysis*, Alg. 5.12: with residual diagonal
    :math:`r = \operatorname{diag}(A)`, repeat for :math:`j = 0, 1, \dots`: pick :math:`i = \arg\max r`,
    :math:`\nu_j = \sqrt{r_i}`, :math:`R_j = (A_{:, i} - R_{<j}^\top R_{<j, i}) / \nu_j`, :math:`r \mathrel{-}= R_j^2`;
    stop at ``max_rank`` rows, when :math:`\sum r \le \mathrm{tol}\cdot\operatorname{tr}A`, or when the largest
    residual pivot falls to rounding level (:math:`\max r \le 64\,\epsilon_{64} \max\operatorname{diag}A`). Then
    :math:`A \approx R^\top R` with :math:`A - R^\top R \succeq 0`; at rank N (or rank(A)) the factorisation is exact.

    Cost: ``rank`` column reads and O(rank² N) arithmetic, O(rank · N) memory; A itself is never formed.

    Args:
        diag: diag(A), shape (N,), or a zero-argument callable returning it.
        column: ``column(i)`` returns A[:, i], shape (N,), for an int ``i``.
        max_rank: the largest number of pivots, integer ≥ 1 (it is capped at N).
        tol: relative stopping tolerance ≥ 0 on the residual trace (0: run to ``max_rank`` or exact rank).

    Returns:
        :class:`PivotedCholesky` with ``R`` (rank, N) float64.

    Raises:
        TypeError: ``diag`` not a tensor or callable, ``column`` not callable, ``max_rank`` not an int.
        ValueError: ``diag`` not 1-D / empty, negative or non-finite ``tol``, ``max_rank`` < 1, a column of the wrong
            shape.

    Example:
        >>> import torch
        >>> B = torch.randn(3, 6, dtype=torch.float64); A = B.T @ B
        >>> f = pivoted_cholesky(torch.diagonal(A), lambda i: A[:, i], max_rank=6)  # rank(A) = 3
        >>> f.rank, bool(torch.allclose(f.R.T @ f.R, A))
        (3, True)
    """
    if callable(diag) and not isinstance(diag, torch.Tensor):
        diag = diag()
    if not isinstance(diag, torch.Tensor):
        raise TypeError(
            f"diag must be a torch.Tensor of shape (N,) or a callable returning one, got {type(diag).__name__}"
        )
    if diag.ndim != 1 or diag.numel() == 0:
        raise ValueError(f"diag must have shape (N,) with N >= 1, got {tuple(diag.shape)}")
    if not callable(column):
        raise TypeError(f"column must be a callable column(i) -> Tensor (N,), got {type(column).__name__}")
    max_rank = check_int("max_rank", max_rank, minimum=1)
    check_nonnegative("tol", tol)
    N = diag.numel()
    max_rank = min(max_rank, N)
    r = diag.detach().to(torch.float64).clone()  # residual diagonal (N,)
    trace = float(r.clamp_min(0).sum())
    floor = 64.0 * torch.finfo(torch.float64).eps * float(r.max())  # pivots below this are rounding noise
    R = torch.zeros(max_rank, N, dtype=torch.float64, device=r.device)  # (rank, N)
    pivots: list[int] = []
    done = torch.zeros(N, dtype=torch.bool, device=r.device)
    for j in range(max_rank):
        res = r.clamp_min(0).masked_fill(done, 0.0)
        if float(res.sum()) <= tol * trace:
            break
        i = int(torch.argmax(res))
        piv = float(res[i])
        if not piv > floor:
            break
        col = column(i)
        if not isinstance(col, torch.Tensor) or col.shape != (N,):
            got = tuple(col.shape) if isinstance(col, torch.Tensor) else type(col).__name__
            raise ValueError(f"column({i}) must return a tensor of shape ({N},), got {got}")
        row = col.detach().to(torch.float64) - R[:j].T @ R[:j, i]  # (N,)
        row = row / math.sqrt(piv)
        row[done] = 0.0  # exact zeros on earlier pivots
        R[j] = row
        r = r - row * row
        done[i] = True
        r[i] = 0.0
        pivots.append(i)
    rank = len(pivots)
    resid = float(r.clamp_min(0).masked_fill(done, 0.0).sum())
    return PivotedCholesky(
        R=R[:rank].contiguous(),
        pivots=torch.tensor(pivots, dtype=torch.long, device=r.device),
        rank=rank,
        trace=trace,
        trace_residual=resid,
    )


def woodbury_solve(R: torch.Tensor, c, v: torch.Tensor) -> torch.Tensor:
    r"""Solve :math:`(R^\top R + cI)\,x = v` by the Woodbury identity.

    .. math::
        (R^\top R + cI)^{-1} v = \bigl(v - R^\top (R R^\top + cI)^{-1} R v\bigr) / c

    Cost O(ℓ² N + ℓ³) for R of shape (ℓ, N); one ℓ × ℓ Cholesky factorisation.

    Args:
        R: (ℓ, N) factor (ℓ may be 0).
        c: shift > 0 (float or scalar tensor).
        v: right-hand side(s), shape (N,) or (N, B).

    Returns:
        float64 tensor of the shape of ``v``.

    Raises:
        TypeError: ``R`` or ``v`` not tensors. ValueError: ``R`` not 2-D, ``v`` of the wrong shape, ``c`` ≤ 0.

    Example:
        >>> import torch
        >>> R = torch.randn(2, 5, dtype=torch.float64); v = torch.randn(5, dtype=torch.float64)
        >>> x = woodbury_solve(R, 0.5, v)
        >>> bool(torch.allclose((R.T @ R + 0.5 * torch.eye(5, dtype=torch.float64)) @ x, v))
        True
    """
    if not isinstance(R, torch.Tensor) or not isinstance(v, torch.Tensor):
        raise TypeError(f"R and v must be torch.Tensors, got {type(R).__name__} and {type(v).__name__}")
    if R.ndim != 2:
        raise ValueError(f"R must have shape (rank, N), got {tuple(R.shape)}")
    if v.ndim not in (1, 2) or v.shape[0] != R.shape[1]:
        raise ValueError(f"v must have shape ({R.shape[1]},) or ({R.shape[1]}, B), got {tuple(v.shape)}")
    check_positive("c", c)
    c = float(c)
    R = R.detach().to(torch.float64)
    v = v.detach().to(torch.float64)
    ell = R.shape[0]
    if ell == 0:
        return v / c
    S = R @ R.T  # (ℓ, ℓ)
    S.diagonal().add_(c)
    L = torch.linalg.cholesky(S)
    Rv = R @ v  # (ℓ,) or (ℓ, B)
    t = torch.cholesky_solve(Rv if Rv.ndim == 2 else Rv[:, None], L)
    t = t if v.ndim == 2 else t[:, 0]
    return (v - R.T @ t) / c


def conjugate_gradient(
    matvec: Callable[[torch.Tensor], torch.Tensor],
    b: torch.Tensor,
    tol: float = 1e-6,
    max_iter: int | None = None,
    precond: Callable[[torch.Tensor], torch.Tensor] | None = None,
    *,
    x0: torch.Tensor | None = None,
    warn: bool = True,
) -> CGResult:
    r"""(Preconditioned) conjugate gradient for a symmetric positive-definite system :math:`A x = b`, matrix-free.

    Stops when the relative residual :math:`\|b - Ax\| / \|b\| \le` ``tol`` or after ``max_iter`` iterations, one
    product ``matvec`` per iteration. With a preconditioner :math:`P \approx A^{-1}` (``precond(r)`` returns
    :math:`P r`, symmetric positive definite) the iteration count depends on the spectrum of :math:`PA`.

    Args:
        matvec: ``matvec(u)`` returns A·u for u of the shape of ``b`` (1-D).
        b: right-hand side, shape (N,).
        tol: relative residual tolerance > 0.
        max_iter: iteration limit ≥ 1 (default N, CG's exact-arithmetic bound).
        precond: optional ``precond(r)`` returning P·r.
        x0: optional starting point (default 0).
        warn: emit :class:`~kernelmmd.ConvergenceWarning` when ``tol`` is not reached.

    Returns:
        :class:`CGResult` (float64 solution, iterations, final relative residual, converged flag).

    Raises:
        TypeError: ``matvec`` / ``precond`` not callable, ``b`` not a tensor. ValueError: ``b`` not 1-D, bad
        ``tol`` / ``max_iter``, ``x0`` of the wrong shape, a ``matvec`` result of the wrong shape.

    Warns:
        ConvergenceWarning: the tolerance was not reached within ``max_iter`` iterations (or the matrix was
        found not to be positive definite).

    Example:
        >>> import torch
        >>> A = torch.tensor([[4.0, 1.0], [1.0, 3.0]], dtype=torch.float64)
        >>> res = conjugate_gradient(lambda u: A @ u, torch.tensor([1.0, 2.0], dtype=torch.float64), tol=1e-12)
        >>> res.converged, [round(v, 6) for v in res.x.tolist()]
        (True, [0.090909, 0.636364])
    """
    if not callable(matvec):
        raise TypeError(f"matvec must be a callable u -> A u, got {type(matvec).__name__}")
    if precond is not None and not callable(precond):
        raise TypeError(f"precond must be None or a callable r -> P r, got {type(precond).__name__}")
    if not isinstance(b, torch.Tensor):
        raise TypeError(f"b must be a torch.Tensor of shape (N,), got {type(b).__name__}")
    if b.ndim != 1 or b.numel() == 0:
        raise ValueError(f"b must have shape (N,) with N >= 1, got {tuple(b.shape)}")
    check_positive("tol", tol)
    N = b.numel()
    max_iter = N if max_iter is None else check_int("max_iter", max_iter, minimum=1)
    b = b.detach().to(torch.float64)

    def A(u):
        out = matvec(u)
        if not isinstance(out, torch.Tensor) or out.shape != (N,):
            got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ValueError(f"matvec must return a tensor of shape ({N},), got {got}")
        return out.detach().to(torch.float64)

    P = (lambda r: precond(r).detach().to(torch.float64)) if precond is not None else (lambda r: r)
    bnorm = float(b.norm())
    if x0 is None:
        x = torch.zeros_like(b)
        r = b.clone()
    else:
        if not isinstance(x0, torch.Tensor) or x0.shape != b.shape:
            got = tuple(x0.shape) if isinstance(x0, torch.Tensor) else type(x0).__name__
            raise ValueError(f"x0 must have the shape of b {tuple(b.shape)}, got {got}")
        x = x0.detach().to(torch.float64).clone()
        r = b - A(x)
    if bnorm == 0.0:
        return CGResult(x=torch.zeros_like(b), iterations=0, residual=0.0, converged=True)
    rel = float(r.norm()) / bnorm
    it = 0
    if rel > tol:
        zr = P(r)
        p = zr.clone()
        rz = float(r @ zr)
        while it < max_iter:
            Ap = A(p)
            pAp = float(p @ Ap)
            it += 1
            if not pAp > 0:
                if warn:
                    warnings.warn(
                        f"conjugate_gradient: pᵀAp = {pAp:.3g} <= 0 at iteration {it}; the matrix is not positive "
                        "definite (or has lost positive definiteness numerically)",
                        ConvergenceWarning,
                        stacklevel=user_stacklevel(),
                    )
                return CGResult(x=x, iterations=it, residual=rel, converged=False)
            alpha = rz / pAp
            x = x + alpha * p
            r = r - alpha * Ap
            rel = float(r.norm()) / bnorm
            if rel <= tol:
                break
            zr = P(r)
            rz_new = float(r @ zr)
            p = zr + (rz_new / rz) * p
            rz = rz_new
    converged = rel <= tol
    if not converged and warn:
        warnings.warn(
            f"conjugate_gradient did not converge: relative residual {rel:.3g} > tol = {tol:g} after {it} iterations "
            f"(max_iter = {max_iter}); raise max_iter, loosen tol or use a preconditioner",
            ConvergenceWarning,
            stacklevel=user_stacklevel(),
        )
    return CGResult(x=x, iterations=it, residual=rel, converged=converged)
